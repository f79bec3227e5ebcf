"""Raw listing data -> clean tables -> features -> split -> database."""
