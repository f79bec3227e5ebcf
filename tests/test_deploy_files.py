"""The deployment files in deploy/ (compose, Dockerfile, Helm chart) are not run by CI (no
Docker engine, registry or cluster there), so these checks are what keeps them honest: they
parse, the API is health-checked on /ready, reads its database and index from the
environment, runs as a non-root user, and no secret value is committed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "fbmarket"
# a Go template action on a line of its own, or inside a line
TEMPLATE_LINE = re.compile(r"^\s*\{\{-?.*-?\}\}\s*$")
TEMPLATE_ACTION = re.compile(r"\{\{-?.*?-?\}\}")


def plain_yaml_files() -> list[Path]:
    files = [p for p in DEPLOY.rglob("*.yaml") if "templates" not in p.parts]
    return sorted(files)


def load(path: Path) -> object:
    return yaml.safe_load(path.read_text())


def blank_template(text: str) -> str:
    """A Helm template with its actions blanked: lines that are only an action go, inline
    actions become a placeholder scalar. What is left must be YAML (a rough check that the
    indentation and structure around the actions are right; `helm template` is the real one)."""
    lines = [line for line in text.splitlines() if not TEMPLATE_LINE.match(line)]
    return "\n".join(TEMPLATE_ACTION.sub("x", line) for line in lines)


def compose() -> dict:
    data = load(DEPLOY / "compose.yaml")
    assert isinstance(data, dict)
    return data


def test_every_yaml_file_parses():
    files = plain_yaml_files()
    assert {p.name for p in files} >= {"compose.yaml", "Chart.yaml", "values.yaml", "values-100m.yaml"}
    for path in files:
        assert isinstance(load(path), dict), path


@pytest.mark.parametrize("name", ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"])
def test_helm_templates_are_yaml_around_their_actions(name):
    document = yaml.safe_load(blank_template((CHART / "templates" / name).read_text()))
    assert isinstance(document, dict) and document["apiVersion"] and document["kind"]


def test_compose_api_is_health_checked_on_ready_and_configured_from_the_environment():
    api = compose()["services"]["api"]
    check = " ".join(api["healthcheck"]["test"])
    assert "/ready" in check
    env = api["environment"]
    assert env["FBMARKET_INDEX_URI"] == "milvus://milvus:19530"
    # the database URL's password is interpolated from the env file, never written here
    assert "${POSTGRES_PASSWORD:?" in env["FBMARKET_DATABASE_URL"]
    assert env["FBMARKET_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert any(
        Path(str(e["path"] if isinstance(e, dict) else e)).name == "fbmarket.env" for e in api["env_file"]
    )
    bundle_mount = [v for v in api["volumes"] if str(v).endswith(":/bundle:ro")]
    assert bundle_mount, "the bundle is mounted read-only"


def test_compose_replicas_sit_behind_the_load_balancer_and_depend_on_the_engines():
    services = compose()["services"]
    assert {"etcd", "minio", "milvus", "postgres", "api", "nginx"} <= set(services)
    assert services["api"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["api"], "replicas are reached through nginx only"
    assert set(services["api"]["depends_on"]) == {"postgres", "milvus"}
    for name in ("milvus", "minio", "etcd"):
        assert "ports" not in services[name], f"{name} stays on the internal network"
    assert all(str(p).startswith("127.0.0.1:") for p in services["nginx"]["ports"])
    assert "server api:8000" in (DEPLOY / "nginx.conf").read_text()


def test_no_secret_value_is_committed():
    services = compose()["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    for line in (DEPLOY / "fbmarket.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert value == "", f"{name} has a value in the committed example"
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/*.env" in gitignore
    for path in (CHART / "values.yaml", CHART / "values-100m.yaml"):
        text = path.read_text().lower()
        assert not re.search(r"(password|secretkey|api_key)\s*:\s*['\"]?[a-z0-9]", text), path
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    for name in ("FBMARKET_DATABASE_URL", "FBMARKET_API_KEY"):
        block = deployment.split(f"name: {name}", 1)[1].split("- name:", 1)[0]
        assert "secretKeyRef" in block, f"{name} comes from the Secret"


def test_one_dockerfile_runs_fbmarket_serve_as_a_non_root_user():
    assert not (DEPLOY / "Dockerfile").exists(), "one image: the repository's Dockerfile"
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^CMD \["fbmarket", "serve", "--bundle", "/artifacts"\]', text, re.M)
    assert "pip install" in text and "/ready" in text
    serve_bundle = ["fbmarket", "serve", "--bundle", "/bundle"]
    api = load(DEPLOY / "compose.yaml")["services"]["api"]
    assert api["build"]["dockerfile"] == "Dockerfile" and api["command"] == serve_bundle
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert 'command: ["fbmarket", "serve", "--bundle", "/bundle"]' in deployment
    assert "mountPath: /bundle" in deployment


def test_chart_depends_on_the_public_milvus_and_postgresql_charts():
    chart = load(CHART / "Chart.yaml")
    repositories = {d["name"]: d["repository"] for d in chart["dependencies"]}
    assert repositories["milvus"] == "https://zilliztech.github.io/milvus-helm/"
    assert repositories["postgresql"].endswith("bitnamicharts")
    values = load(CHART / "values-100m.yaml")
    assert values["milvus"]["cluster"]["enabled"] is True
    assert values["postgresql"]["architecture"] == "replication"
    assert values["autoscaling"]["minReplicas"] >= 2
