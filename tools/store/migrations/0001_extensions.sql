-- pgvector: dense `vector` and sparse `sparsevec` types with HNSW indexes.
create extension if not exists vector;
