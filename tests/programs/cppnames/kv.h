// The C API of a small C++ library (kv.cpp), as cgo programs wrap C++.
#ifdef __cplusplus
extern "C" {
#endif
void kv_table_insert(int n);
void kv_index_insert(int n);
void kv_store_put(int n);
void kv_table_grow(int n);
#ifdef __cplusplus
}
#endif
