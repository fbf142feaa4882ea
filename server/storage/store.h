// Durable state of cgoheapd in RocksDB.
//
// Column families:
//   processes  process_id(8, big-endian)            -> StoredProcess
//   stacks     stack_id(8, big-endian)              -> Stack
//   batches    process_id(8) | seq(8), big-endian   -> EventBatch (events only)
//   snapshots  process_id(8)                        -> LiveSnapshot
//
// Writes append each acknowledged batch under a sequential key: RocksDB takes
// those at millions of keys per second here, where one random key per event
// manages a few hundred thousand (docs/ARCHITECTURE.md fact 10). The live heap of a
// running process is derived state, rebuilt by replaying its batches; when a
// process ends its exit leaks are folded into its StoredProcess and its
// batches deleted in the same atomic write. A process that runs for a long
// time would grow its batch log without end, so once the log outweighs the
// live heap, a LiveSnapshot replaces the batches it covers (also one atomic
// write): the disk holds at most a few times each process's live heap.
//
//   auto store = Store::Open("/var/lib/cgoheap", {.sync = false});
//   if (!store.ok()) return store.status();
//   (*store)->AppendBatch(pid, seq, batch, new_stacks);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cgoheap.pb.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace cgoheap::server {

struct StoreOptions {
  bool sync = false;  // fsync the WAL on every write (survives power loss)
};

// Thread-safe.
class Store {
 public:
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& dir,
                                                     StoreOptions options = {});
  ~Store();

  absl::Status PutProcess(uint64_t process_id, const v1::StoredProcess& p);
  // One atomic write: the batch's events and any stacks it introduced.
  absl::Status AppendBatch(uint64_t process_id, uint64_t seq, const v1::EventBatch& events,
                           const std::vector<const v1::Stack*>& new_stacks);
  // One atomic write: the final record, and the batches and snapshot deleted.
  absl::Status EndProcess(uint64_t process_id, const v1::StoredProcess& final_record);
  // One atomic write: the snapshot, and the batches up to its seq deleted.
  absl::Status PutSnapshot(uint64_t process_id, const v1::LiveSnapshot& snapshot);
  // NotFound when the process has none.
  absl::StatusOr<v1::LiveSnapshot> GetSnapshot(uint64_t process_id) const;

  absl::Status ForEachProcess(
      const std::function<void(uint64_t, v1::StoredProcess&&)>& fn) const;
  absl::Status ForEachStack(const std::function<void(v1::Stack&&)>& fn) const;
  absl::Status ForEachBatch(uint64_t process_id,
                            const std::function<void(uint64_t seq, v1::EventBatch&&)>& fn) const;
  // Bytes of SST and WAL files on disk, as RocksDB estimates them.
  uint64_t DiskBytes() const;

 private:
  Store() = default;
  absl::Status Write(void* batch);                      // rocksdb::WriteBatch*
  void DeleteBatches(void* batch, uint64_t process_id, uint64_t up_to_seq);

  StoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // default, processes, stacks, batches, snapshots
};

// Big-endian keys keep a process's batches in seq order.
std::string ProcessKey(uint64_t process_id);
std::string BatchKey(uint64_t process_id, uint64_t seq);

}  // namespace cgoheap::server
