-- Inner-product HNSW index over item tag vectors: tag-profile retrieval is an ORDER BY on it.
create index items_tag_vec_hnsw on items using hnsw (tag_vec sparsevec_ip_ops);
