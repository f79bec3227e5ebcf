"""Reading dataset folders and SQL tables without losing or inventing rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from fbmarket.data.schema import SchemaError
from fbmarket.data.sources import read_folder, read_source

HEADER = ",id,product_name,category,product_description,price,location\n"


def write_dataset(folder: Path, products: bytes, images: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Products.csv").write_bytes(products)
    (folder / "Images.csv").write_bytes(images or b",id,product_id,image_ref,create_time\n")
    return folder


def test_bare_carriage_returns_inside_fields_do_not_split_rows(tmp_path: Path) -> None:
    body = (
        HEADER
        + '0,a,"Sofa | in Delph, Manchester | Gumtree",Home & Garden / Sofas,Corner sofa\r5 seats\r,£450.00,"Delph, Manchester"\n'
        + '1,b,"Kettle | in Leeds, West Yorkshire | Gumtree",Appliances,Works,£5.00,"Leeds, West Yorkshire"\n'
    )
    tables = read_folder(write_dataset(tmp_path, body.encode()))
    assert list(tables.products["id"]) == ["a", "b"]
    assert tables.products.loc[0, "product_description"] == "Corner sofa 5 seats "
    assert "id" in tables.products.columns and "" not in tables.products.columns


def test_malformed_rows_are_counted_not_fatal(tmp_path: Path) -> None:
    body = (
        HEADER + '0,a,"T | in X, Y | Gumtree",Appliances,d,£1.00,"X, Y"\n1,b,too,many,fields,here,x,y,z,w\n'
    )

    tables = read_folder(write_dataset(tmp_path, body.encode()))
    assert list(tables.products["id"]) == ["a"]
    assert tables.issues.malformed_rows == {"Products.csv": 1}


def test_non_utf8_file_is_read_and_flagged(tmp_path: Path) -> None:
    body = (
        HEADER + '0,a,Caf\xe9 chair | in X | Gumtree,Home & Garden,nice,\xa35.00,"Bath, Somerset"\n'
    ).encode("cp1252")
    tables = read_folder(write_dataset(tmp_path, body))
    assert tables.products.loc[0, "product_name"].startswith("Café chair")
    assert tables.products.loc[0, "price"] == "£5.00"
    assert tables.issues.non_utf8_files == ["Products.csv"]


def test_missing_column_is_named(tmp_path: Path) -> None:
    body = b",id,product_name,category,price,location\n0,a,T,C,1,L\n"
    with pytest.raises(SchemaError, match="product_description"):
        read_folder(write_dataset(tmp_path, body))


def test_missing_files_and_folders_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_folder(tmp_path / "nowhere")
    (tmp_path / "Products.csv").write_text(HEADER)
    with pytest.raises(FileNotFoundError, match="Images.csv"):
        read_folder(tmp_path)


def test_sql_source_reads_the_same_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'raw.db'}"
    engine = sa.create_engine(url)
    products = pd.DataFrame(
        {
            "id": ["a"],
            "product_name": ["Kettle | in Leeds, West Yorkshire | Gumtree"],
            "category": ["Appliances"],
            "product_description": ["Works"],
            "price": ["£5.00"],
            "location": ["Leeds, West Yorkshire"],
        }
    )
    products.to_sql("products", engine, index=True)
    pd.DataFrame({"id": ["i1"], "product_id": ["a"]}).to_sql("images", engine, index=False)
    engine.dispose()
    tables = read_source(url)
    assert tables.products.to_dict("records") == products.to_dict("records")
    assert list(tables.images["product_id"]) == ["a"]
    assert tables.users is None


def test_sql_source_without_products_table_is_clear(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    sa.create_engine(url).dispose()
    with pytest.raises(SchemaError, match="products"):
        read_source(url)
