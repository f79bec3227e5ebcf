"""Reading dataset folders and SQL tables without losing or inventing rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from fbmarket.config import Settings
from fbmarket.data.schema import SchemaError
from fbmarket.data.sources import read_folder, read_source
from fbmarket.prepare import clean_raw

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


# ---- issue 14, kinds 2 and 3: one stray byte, huge fields, and an account of every row ----------
def product_line(i: int, description: str = "Works well", price: str = "£5.00") -> str:
    return f'{i},p{i},"Kettle {i} | in Leeds, West Yorkshire | Gumtree",Appliances / Kettles,{description},{price},"Leeds, West Yorkshire"\n'


def test_one_stray_cp1252_byte_damages_only_its_own_field(tmp_path: Path) -> None:
    lines = [product_line(i).encode() for i in range(40)]
    lines[7] = (
        product_line(7, description="Was POUND30 new").encode().replace(b"POUND", b"\xa3")
    )  # one stray byte
    tables = read_folder(write_dataset(tmp_path, HEADER.encode() + b"".join(lines)))
    products = tables.products
    assert len(products) == 40
    assert products["price"].eq("£5.00").all()  # not "Â£5.00"
    assert products.loc[7, "product_description"] == "Was £30 new"
    assert not products["product_name"].str.contains("Â").any()
    assert tables.issues.non_utf8_files == ["Products.csv"]
    assert tables.issues.cp1252_fields == {"Products.csv": 1}
    assert tables.issues.cp1252_rows == {"Products.csv": 1}
    _, _, report = clean_raw(tables, Settings(out_dir=tmp_path / "out"), show_progress=False)
    assert report.rows_in == 40 and report.rows_out == 40 and not report.dropped
    assert report.to_json()["read_issues"]["cp1252_repaired_rows"] == {"Products.csv": 1}


def test_mixed_bytes_in_one_field_keep_their_utf8_part(tmp_path: Path) -> None:
    line = product_line(0, description="Caf\u00e9 chair").encode().replace(b"chair", b"\x93chair\x94")
    tables = read_folder(write_dataset(tmp_path, HEADER.encode() + line))
    assert tables.products.loc[0, "product_description"] == "Caf\u00e9 \u201cchair\u201d"


def test_a_150000_character_description_is_kept_and_truncated(tmp_path: Path) -> None:
    lines = [product_line(i, description="x" * 150_000 if i == 4 else "desc") for i in range(10)]
    tables = read_folder(write_dataset(tmp_path, (HEADER + "".join(lines)).encode()))
    assert len(tables.products) == 10 and tables.issues.malformed_rows == {}
    assert len(tables.products.loc[4, "product_description"]) == 150_000
    settings = Settings(out_dir=tmp_path / "out")
    products, _, report = clean_raw(tables, settings, show_progress=False)
    assert report.rows_in == 10 and report.rows_out == 10
    assert report.notes["description_truncated"] == 1
    long = products.set_index("product_id").loc["p4", "description"]
    assert len(long) == settings.data.max_description_chars
    assert csv.field_size_limit() == 131_072  # the process-wide limit is back as it was


ODD_FILES: dict[str, tuple[str, int, int, dict[str, int]]] = {
    # name: (Products.csv body after the header, data rows, rows kept, dropped by reason)
    "huge field": ("".join(product_line(i, "y" * 200_000 if i == 1 else "d") for i in range(3)), 3, 3, {}),
    "too many fields": (
        product_line(0) + "1,p1,too,many,fields,here,x,y,z,w\n" + product_line(2),
        3, 2, {"malformed_row": 1},
    ),
    "too few fields": (product_line(0) + "1,p1,Lamp | in X | Gumtree\n" + product_line(2), 3, 2, {"missing_category": 1}),
    "unterminated quote": (
        product_line(0) + '1,p1,"Lamp | in X | Gumtree,Home,broken,£5.00,X\n' + product_line(2) + product_line(3),
        4, 3, {"malformed_row": 1},
    ),
    "unterminated quote on the last line": (
        product_line(0) + product_line(1) + '2,p2,Lamp,Home,"broken,£5.00,X\n', 3, 2, {"malformed_row": 1},
    ),
    "unterminated quote on the last lines": (
        product_line(0) + '1,p1,Lamp,Home,"broken,£5.00,X\n2,p2,x,y\n3,p3,z\n', 4, 1, {"malformed_row": 1, "missing_price": 1, "missing_category": 1},
    ),
    "blank lines": ("\n" + product_line(0) + "\n\n" + product_line(1) + "   \n", 2, 2, {}),
    "quoted newlines": (product_line(0, '"two\nlines, and ""quotes"""') + product_line(1), 2, 2, {}),
    "bare carriage return": (product_line(0, "one\rtwo") + product_line(1), 2, 2, {}),
    "NUL byte": (product_line(0, "nul\x00here") + product_line(1), 2, 2, {}),
    "stray inch quote": (product_line(0, 'a 5" TV') + product_line(1), 2, 2, {}),
    "no final newline": (product_line(0) + product_line(1).rstrip("\n"), 2, 2, {}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ODD_FILES))
def test_rows_in_is_every_data_row_of_odd_files(tmp_path: Path, case: str) -> None:
    body, data_rows, kept, dropped = ODD_FILES[case]
    tables = read_folder(write_dataset(tmp_path, (HEADER + body).encode()))
    issues = tables.issues
    assert issues.data_rows["Products.csv"] == data_rows
    assert len(tables.products) + issues.malformed_rows.get("Products.csv", 0) == data_rows
    _, _, report = clean_raw(tables, Settings(out_dir=tmp_path / "out"), show_progress=False)
    assert report.rows_in == data_rows
    assert report.rows_out == kept and dict(report.dropped) == dropped
    assert report.rows_in == report.rows_out + sum(report.dropped.values())


def test_malformed_rows_say_why_and_where(tmp_path: Path) -> None:
    body, *_ = ODD_FILES["unterminated quote"]
    tables = read_folder(write_dataset(tmp_path, (HEADER + body).encode()))
    assert list(tables.products["id"]) == ["p0", "p2", "p3"]  # the rows after it are not swallowed
    assert tables.issues.malformed_reasons == {"Products.csv": {"unterminated_quote": 1}}
    assert tables.issues.malformed_examples["Products.csv"][0].startswith(
        "line 3 (unterminated_quote): 1,p1,"
    )


def test_crlf_and_bom_files_read_like_any_other(tmp_path: Path) -> None:
    body = "\ufeff" + HEADER + product_line(0) + product_line(1)
    tables = read_folder(write_dataset(tmp_path, body.replace("\n", "\r\n").encode()))
    assert list(tables.products.columns) == [
        "id",
        "product_name",
        "category",
        "product_description",
        "price",
        "location",
    ]
    assert list(tables.products["location"]) == ["Leeds, West Yorkshire"] * 2


def test_a_utf16_export_with_its_bom_is_read(tmp_path: Path) -> None:
    body = HEADER + product_line(0, "Caf\u00e9 chair") + product_line(1)
    tables = read_folder(write_dataset(tmp_path, body.encode("utf-16")))
    assert list(tables.products["price"]) == ["£5.00", "£5.00"]
    assert tables.products.loc[0, "product_description"] == "Caf\u00e9 chair"
    assert tables.issues.non_utf8_files == []


def test_photo_rows_match_their_listing_despite_stray_spaces(tmp_path: Path) -> None:
    from PIL import Image

    images = b",id,product_id,image_ref,create_time\n0, IMG_1 , p0 ,r,24/02/2022\n"
    folder = write_dataset(tmp_path / "data", (HEADER + product_line(0)).encode(), images)
    (folder / "images").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "images" / "IMG_1.JPG", format="JPEG")
    tables = read_folder(folder)
    products, photos, report = clean_raw(tables, Settings(out_dir=tmp_path / "out"), show_progress=False)
    assert report.images["orphan_rows"] == 0 and report.images["cleaned"] == 1
    assert photos["product_id"].tolist() == ["p0"] and products.loc[0, "created"] == "2022-02-24"


def test_the_report_names_each_missing_photo_and_the_file_names_tried(tmp_path: Path) -> None:
    """Counts alone ("missing_file: 25") do not say which photos; the report names the first 20
    of each skip reason, a missing one with the names tried, and the summary shows the first."""
    from PIL import Image

    from fbmarket.prepare import SKIPPED_PHOTOS_SHOWN
    from fbmarket.workflow import format_summary

    rows = "".join(f"{i},IMG_{i},p0,r,24/02/2022\n" for i in range(26))
    images = (",id,product_id,image_ref,create_time\n" + rows).encode()
    folder = write_dataset(tmp_path / "data", (HEADER + product_line(0)).encode(), images)
    (folder / "images").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "images" / "IMG_0.jpg", format="JPEG")
    (folder / "images" / "IMG_1.jpg").write_bytes(b"")
    _, _, report = clean_raw(read_folder(folder), Settings(out_dir=tmp_path / "out"), show_progress=False)
    images_report = report.to_json()["images"]
    assert images_report["skipped"] == {"missing_file": 24, "empty_file": 1}
    missing = images_report["skipped_examples"]["missing_file"]
    assert missing["total"] == 24 and missing["shown"] == SKIPPED_PHOTOS_SHOWN == len(missing["photos"])
    first = missing["photos"][0]
    assert first["image_id"] == "IMG_2" and first["product_id"] == "p0"
    assert first["tried"][0] == "IMG_2.jpg" and first["tried"][-1] == "IMG_2" and "IMG_2.png" in first["tried"]
    assert str(folder / "images") in first["message"]
    empty = images_report["skipped_examples"]["empty_file"]
    assert empty == {"total": 1, "shown": 1, "photos": [empty["photos"][0]]}
    assert empty["photos"][0]["image_id"] == "IMG_1" and "tried" not in empty["photos"][0]
    summary = format_summary(
        {"data": {"photos_skipped": images_report["skipped"],
                  "photos_skipped_examples": images_report["skipped_examples"]}}
    )  # fmt: skip
    assert "IMG_2 (tried IMG_2.jpg, IMG_2.jpeg, IMG_2.png, ...)" in summary
    assert "+21 more in reports/cleaning.json" in summary


def test_photos_of_a_dataset_without_an_images_folder_are_named(tmp_path: Path) -> None:
    images = b",id,product_id,image_ref,create_time\n0,IMG_0,p0,r,24/02/2022\n"
    folder = write_dataset(tmp_path / "data", (HEADER + product_line(0)).encode(), images)
    _, _, report = clean_raw(read_folder(folder), Settings(out_dir=tmp_path / "out"), show_progress=False)
    block = report.images["skipped_examples"]["no_image_folder"]
    assert block["total"] == 1 and block["photos"][0]["image_id"] == "IMG_0"
    assert "has no images/ folder" in block["photos"][0]["message"]


# A stray quote that the csv module would silently "close" on the next quote, gluing fields.
STRAY_QUOTES = {
    "before a quoted field": '1,p1,"Lamp | in Croydon, London | Gumtree",Home,desc,"£280.00,"Croydon, London"\n',
    "text after a closing quote": '1,p1,Lamp,Home,"desc"ription,£280.00,"Croydon, London"\n',
    "in the title": '1,p1,"Lamp | in Croydon, London | Gumtree,"Home",desc,£280.00,"Croydon, London"\n',
    "opening a field on a later line": '1,p1,Lamp,Home,"two\nlines" here,£280.00,"Croydon, London"\n',
}


@pytest.mark.parametrize("case", sorted(STRAY_QUOTES))
def test_a_stray_quote_that_glues_fields_is_a_malformed_row_with_its_reason(tmp_path: Path, case: str) -> None:
    body = HEADER + product_line(0) + STRAY_QUOTES[case] + product_line(2)
    tables = read_folder(write_dataset(tmp_path, body.encode()))
    assert list(tables.products["id"]) == ["p0", "p2"]  # no row with location 'London"'
    assert tables.issues.malformed_reasons == {"Products.csv": {"stray_quote": 1}}
    example = tables.issues.malformed_examples["Products.csv"][0]
    assert example.startswith("line 3 (stray_quote): 1,p1,")
    _, _, report = clean_raw(tables, Settings(out_dir=tmp_path / "out"), show_progress=False)
    assert report.rows_in == 3 and report.rows_out == 2 and dict(report.dropped) == {"malformed_row": 1}


@pytest.mark.parametrize(
    "line",
    [product_line(1, 'a 5" TV'), product_line(1, 'TV 40"'), product_line(1, '"say ""hi"", ok"'),
     '1,p1,Lamp,Home,"quoted" ,£5.00,"Leeds, West Yorkshire" \n'],  # blanks after a closing quote
)  # fmt: skip
def test_quotes_that_pair_up_or_sit_inside_a_field_are_no_stray_quote(tmp_path: Path, line: str) -> None:
    tables = read_folder(write_dataset(tmp_path, (HEADER + product_line(0) + line).encode()))
    assert len(tables.products) == 2 and tables.issues.malformed_rows == {}


def test_a_file_with_old_mac_cr_line_endings_is_read_line_by_line(tmp_path: Path) -> None:
    """Classic Mac OS / Excel "CSV (Macintosh)" ends lines in a bare CR: read as lines, listed."""
    from PIL import Image

    body = HEADER + product_line(0, '"two\rlines"') + product_line(1) + product_line(2)
    images = ",id,product_id,image_ref,create_time\n0,IMG_0,p1,r,24/02/2022\n"
    folder = write_dataset(tmp_path / "data", body.replace("\n", "\r").encode(), images.replace("\n", "\r").encode())
    (folder / "images").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "images" / "IMG_0.jpg", format="JPEG")
    tables = read_folder(folder)
    assert list(tables.products["id"]) == ["p0", "p1", "p2"]
    assert tables.products.loc[0, "product_description"] == "two\nlines"  # a quoted line break stays one
    assert list(tables.products["location"]) == ["Leeds, West Yorkshire"] * 3
    assert tables.images["id"].tolist() == ["IMG_0"]
    assert tables.issues.cr_line_ending_files == ["Products.csv", "Images.csv"]
    products, photos, report = clean_raw(tables, Settings(out_dir=tmp_path / "out"), show_progress=False)
    assert report.rows_in == 3 == report.rows_out and len(photos) == 1
    assert report.read_issues["cr_line_ending_files"] == ["Products.csv", "Images.csv"]


def test_cr_only_lines_are_not_confused_with_bare_crs_inside_fields(tmp_path: Path) -> None:
    crlf = (HEADER + product_line(0, "one\rtwo") + product_line(1)).replace("\n", "\r\n")
    tables = read_folder(write_dataset(tmp_path, crlf.encode()))
    assert len(tables.products) == 2 and tables.issues.cr_line_ending_files == []
    assert tables.products.loc[0, "product_description"] == "one two"


def test_a_missing_column_message_stays_short_whatever_the_header(tmp_path: Path) -> None:
    header = ",id,product_name," + "x" * 100_000 + "," + ",".join(f"c{i}" for i in range(50)) + "\n"
    with pytest.raises(SchemaError) as raised:
        read_folder(write_dataset(tmp_path, (header + "0,a,b\n").encode()))
    message = str(raised.value)
    assert "missing required column(s): category, product_description, price, location" in message
    assert len(message) < 1_000 and "(100,000 characters)" in message and "... 33 more)" in message
