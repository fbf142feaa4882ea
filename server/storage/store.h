// Durable state of cgoheapd in RocksDB.
//
// Column families:
//   processes  process_id(8, big-endian)            -> StoredProcess
//   stacks     stack_id(8, big-endian)              -> Stack
//   batches    process_id(8) | seq(8), big-endian   -> EventBatch (events only)
//   snapshots  process_id(8)                        -> LiveSnapshot (header)
//              process_id(8) | chunk(8)             -> LiveSnapshot (blocks only)
//
// Writes append each acknowledged batch under a sequential key: RocksDB takes
// those at millions of keys per second here, where one random key per event
// manages a few hundred thousand (docs/ARCHITECTURE.md fact 10). The live heap of a
// running process is derived state, rebuilt by replaying its batches; when a
// process ends its exit leaks are folded into its StoredProcess and its
// batches deleted in the same atomic write. A process that runs for a long
// time would grow its batch log without end, so once the log outweighs the
// live heap, a LiveSnapshot replaces the batches it covers (also one atomic
// write): the disk holds at most a few times each process's live heap. A
// snapshot is written as a header and chunks of a bounded number of blocks:
// protobuf cannot serialize a message of 2 GiB or more, and a live heap of
// 100 million blocks would be one.
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
class Env;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace cgoheap::server {

struct StoreOptions {
  bool sync = false;  // fsync the WAL on every write (survives power loss)
  rocksdb::Env* env = nullptr;  // where files go; nullptr: the real file system
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
  // One atomic write: the snapshot (header, then every chunk next_chunk fills
  // until it returns false), the previous snapshot and the batches up to the
  // header's seq deleted. Nothing is written if any part cannot be serialized.
  absl::Status PutSnapshot(uint64_t process_id, v1::LiveSnapshot header,
                           const std::function<bool(v1::LiveSnapshot* chunk)>& next_chunk);
  // The header; NotFound when the process has none. Every chunk's blocks (and
  // the header's, in snapshots from before chunks) go to `blocks`; DataLoss if a
  // chunk the header counts is missing or unreadable.
  absl::StatusOr<v1::LiveSnapshot> GetSnapshot(
      uint64_t process_id, const std::function<void(const v1::LiveSnapshot&)>& blocks) const;

  absl::Status ForEachProcess(
      const std::function<void(uint64_t, v1::StoredProcess&&)>& fn) const;
  absl::Status ForEachStack(const std::function<void(v1::Stack&&)>& fn) const;
  absl::Status ForEachBatch(uint64_t process_id,
                            const std::function<void(uint64_t seq, v1::EventBatch&&)>& fn) const;
  // One atomic write: each process's record, batches and snapshot, and the
  // stacks named, deleted (retention).
  absl::Status Forget(const std::vector<uint64_t>& process_ids, const std::vector<uint64_t>& stack_ids);
  // Flushes every memtable and compacts the processes, stacks and snapshots
  // column families, so that what Forget deleted leaves the disk.
  absl::Status Compact();
  // Removes every record (one atomic write): a fuzzer starts each input on
  // an empty store without reopening RocksDB.
  absl::Status Clear();
  // Bytes of SST and WAL files on disk, as RocksDB estimates them.
  uint64_t DiskBytes() const;

 private:
  Store() = default;
  absl::Status Write(void* batch);                      // rocksdb::WriteBatch*
  void DeleteBatches(void* batch, uint64_t process_id, uint64_t up_to_seq);
  void DeleteSnapshot(void* batch, uint64_t process_id);

  StoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // default, processes, stacks, batches, snapshots
};

// Big-endian keys keep a process's batches in seq order.
std::string ProcessKey(uint64_t process_id);
std::string BatchKey(uint64_t process_id, uint64_t seq);

}  // namespace cgoheap::server
