"""Search: embedding export, FAISS index, BM25 lexical retrieval, hybrid fusion."""
