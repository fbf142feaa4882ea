// A small C++ library whose objects leak: two classes with an Insert each,
// a templated method, and an inlined method.
#include "kv.h"

namespace kv {

struct Row {
  long key, value;
};

// Where the leaked objects are kept (an array: no allocation of its own).
Row* volatile kept[16];
int nkept;
void Keep(Row* r) { kept[nkept++] = r; }

class Table {
 public:
  __attribute__((noinline)) void Insert(int n) {
    Keep(new Row{n, 1});  // LEAK: Table::Insert
  }
  // Inlined into its callers.
  inline __attribute__((always_inline)) void Grow(int n) {
    Keep(new Row[2]{{n, 2}, {n, 3}});  // LEAK: Table::Grow
  }
};

class Index {
 public:
  __attribute__((noinline)) void Insert(int n) {
    Keep(new Row{n, 4});  // LEAK: Index::Insert
  }
};

class Store {
 public:
  template <typename T>
  __attribute__((noinline)) void Put(T v) {
    Keep(new Row{static_cast<long>(v), 5});  // LEAK: Store::Put
  }
};

}  // namespace kv

extern "C" {
void kv_table_insert(int n) { kv::Table().Insert(n); }
void kv_index_insert(int n) { kv::Index().Insert(n); }
void kv_store_put(int n) { kv::Store().Put<int>(n); }
void kv_table_grow(int n) {
  kv::Table t;
  t.Grow(n);  // CALLS Grow
}
}
