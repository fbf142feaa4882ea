#include "server/storage/store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include "absl/strings/str_cat.h"

namespace cgoheap::server {
namespace {

enum Cf { kDefault = 0, kProcesses, kStacks, kBatches, kSnapshots };

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(std::string(what), ": ", s.ToString());
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return absl::FailedPreconditionError(
        absl::StrCat(msg, " (is another cgoheapd using this --data directory?)"));
  }
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsIOError()) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

void PutBE(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>(v >> (i * 8)));
}

uint64_t GetBE(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < s.size(); ++i) v = (v << 8) | static_cast<uint8_t>(s[i]);
  return v;
}

}  // namespace

std::string ProcessKey(uint64_t process_id) {
  std::string k;
  PutBE(&k, process_id);
  return k;
}

std::string BatchKey(uint64_t process_id, uint64_t seq) {
  std::string k;
  PutBE(&k, process_id);
  PutBE(&k, seq);
  return k;
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir, StoreOptions options) {
  rocksdb::Options db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  db_opts.IncreaseParallelism(2);
  db_opts.max_total_wal_size = 256 << 20;
  db_opts.keep_log_file_num = 4;
  if (options.env != nullptr) db_opts.env = options.env;
  rocksdb::ColumnFamilyOptions cf_opts;
  cf_opts.OptimizeLevelStyleCompaction(64 << 20);
  // In the order of the handle indices (kProcesses, ...), after the default.
  const std::vector<std::string> names = {"processes", "stacks", "batches", "snapshots"};
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {{rocksdb::kDefaultColumnFamilyName, cf_opts}};
  // A new store gets its column families in one call: RocksDB rewrites and
  // re-reads its OPTIONS file for each one created at Open (milliseconds
  // each, and `cgoheap run` opens a new store every run).
  std::vector<std::string> existing;
  const bool fresh = !rocksdb::DB::ListColumnFamilies(db_opts, dir, &existing).ok();
  if (!fresh) {
    for (const std::string& name : names) cfs.push_back({name, cf_opts});
  }
  std::unique_ptr<Store> store(new Store);
  store->options_ = options;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_opts, dir, cfs, &store->handles_, &db);
  if (!s.ok()) return FromRocks(s, absl::StrCat("opening RocksDB in ", dir));
  store->db_.reset(db);
  if (fresh) {
    std::vector<rocksdb::ColumnFamilyHandle*> created;
    s = db->CreateColumnFamilies(cf_opts, names, &created);
    store->handles_.insert(store->handles_.end(), created.begin(), created.end());
    if (!s.ok()) return FromRocks(s, absl::StrCat("creating column families in ", dir));
  }
  return store;
}

Store::~Store() {
  if (db_ != nullptr) {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close();
  }
}

absl::Status Store::Write(void* batch) {
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  return FromRocks(db_->Write(wo, static_cast<rocksdb::WriteBatch*>(batch)), "RocksDB write");
}

void Store::DeleteBatches(void* batch, uint64_t process_id, uint64_t up_to_seq) {
  auto* wb = static_cast<rocksdb::WriteBatch*>(batch);
  wb->DeleteRange(handles_[kBatches], BatchKey(process_id, 0), BatchKey(process_id, up_to_seq));
  wb->Delete(handles_[kBatches], BatchKey(process_id, up_to_seq));
}

void Store::DeleteSnapshot(void* batch, uint64_t process_id) {
  // The header's key is the 8-byte prefix of every chunk's key; nine 0xff
  // bytes after it sort after all of them.
  auto* wb = static_cast<rocksdb::WriteBatch*>(batch);
  std::string key = ProcessKey(process_id);
  wb->DeleteRange(handles_[kSnapshots], key, key + std::string(9, '\xff'));
}

absl::Status Store::PutSnapshot(uint64_t process_id, v1::LiveSnapshot header,
                                const std::function<bool(v1::LiveSnapshot*)>& next_chunk) {
  rocksdb::WriteBatch wb;
  DeleteSnapshot(&wb, process_id);
  std::string value;
  uint64_t chunks = 0;
  for (v1::LiveSnapshot chunk; next_chunk(&chunk); chunk.Clear(), ++chunks) {
    if (!chunk.SerializeToString(&value)) {
      return absl::InternalError(absl::StrCat("snapshot chunk ", chunks, " of process ",
                                              process_id, " cannot be serialized (",
                                              chunk.addresses_size(), " blocks)"));
    }
    wb.Put(handles_[kSnapshots], BatchKey(process_id, chunks), value);
  }
  header.clear_addresses();
  header.clear_sizes();
  header.clear_stack_ids();
  header.set_chunks(chunks);
  if (!header.SerializeToString(&value)) {
    return absl::InternalError("snapshot header cannot be serialized");
  }
  wb.Put(handles_[kSnapshots], ProcessKey(process_id), value);
  DeleteBatches(&wb, process_id, header.seq());
  return Write(&wb);
}

absl::StatusOr<v1::LiveSnapshot> Store::GetSnapshot(
    uint64_t process_id, const std::function<void(const v1::LiveSnapshot&)>& blocks) const {
  const std::string prefix = ProcessKey(process_id);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, handles_[kSnapshots]));
  it->Seek(prefix);
  if (!it->status().ok()) return FromRocks(it->status(), "reading a snapshot");
  if (!it->Valid() || it->key().ToStringView() != prefix) {
    return absl::NotFoundError("no snapshot");
  }
  v1::LiveSnapshot header;
  if (!header.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
    return absl::DataLossError(absl::StrCat("unreadable snapshot of process ", process_id));
  }
  blocks(header);
  uint64_t seen = 0;
  v1::LiveSnapshot chunk;
  for (it->Next(); it->Valid() && it->key().starts_with(prefix); it->Next(), ++seen) {
    if (it->key().size() != 16 || GetBE(it->key().ToStringView().substr(8)) != seen ||
        !chunk.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(
          absl::StrCat("snapshot of process ", process_id, ": chunk ", seen, " is unreadable"));
    }
    blocks(chunk);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "reading a snapshot");
  if (seen != header.chunks()) {
    return absl::DataLossError(absl::StrCat("snapshot of process ", process_id, " has ", seen,
                                            " of its ", header.chunks(), " chunks"));
  }
  return header;
}

absl::Status Store::PutProcess(uint64_t process_id, const v1::StoredProcess& p) {
  rocksdb::WriteBatch wb;
  wb.Put(handles_[kProcesses], ProcessKey(process_id), p.SerializeAsString());
  return Write(&wb);
}

absl::Status Store::AppendBatch(uint64_t process_id, uint64_t seq, const v1::EventBatch& events,
                                const std::vector<const v1::Stack*>& new_stacks) {
  rocksdb::WriteBatch wb;
  for (const v1::Stack* st : new_stacks) {
    wb.Put(handles_[kStacks], ProcessKey(st->id()), st->SerializeAsString());
  }
  wb.Put(handles_[kBatches], BatchKey(process_id, seq), events.SerializeAsString());
  return Write(&wb);
}

absl::Status Store::EndProcess(uint64_t process_id, const v1::StoredProcess& final_record) {
  rocksdb::WriteBatch wb;
  wb.Put(handles_[kProcesses], ProcessKey(process_id), final_record.SerializeAsString());
  DeleteSnapshot(&wb, process_id);
  DeleteBatches(&wb, process_id, ~uint64_t{0});
  return Write(&wb);
}

absl::Status Store::ForEachProcess(
    const std::function<void(uint64_t, v1::StoredProcess&&)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, handles_[kProcesses]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    v1::StoredProcess p;
    if (!p.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(
          absl::StrCat("unreadable process record ", GetBE(it->key().ToStringView())));
    }
    fn(GetBE(it->key().ToStringView()), std::move(p));
  }
  return FromRocks(it->status(), "reading processes");
}

absl::Status Store::ForEachStack(const std::function<void(v1::Stack&&)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, handles_[kStacks]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    v1::Stack st;
    if (!st.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError("unreadable stack record");
    }
    fn(std::move(st));
  }
  return FromRocks(it->status(), "reading stacks");
}

absl::Status Store::ForEachBatch(
    uint64_t process_id, const std::function<void(uint64_t, v1::EventBatch&&)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, handles_[kBatches]));
  std::string prefix = ProcessKey(process_id);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    v1::EventBatch b;
    if (!b.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(absl::StrCat("unreadable batch of process ", process_id));
    }
    fn(GetBE(it->key().ToStringView().substr(8)), std::move(b));
  }
  return FromRocks(it->status(), "reading batches");
}

absl::Status Store::Forget(const std::vector<uint64_t>& process_ids,
                           const std::vector<uint64_t>& stack_ids) {
  rocksdb::WriteBatch wb;
  for (uint64_t id : process_ids) {
    wb.Delete(handles_[kProcesses], ProcessKey(id));
    DeleteSnapshot(&wb, id);
    DeleteBatches(&wb, id, ~uint64_t{0});
  }
  for (uint64_t id : stack_ids) wb.Delete(handles_[kStacks], ProcessKey(id));
  return Write(&wb);
}

absl::Status Store::Compact() {
  // Every column family's memtable is flushed first: a log file is deleted
  // only once no memtable needs it, and the deleted records are in logs.
  rocksdb::Status flushed = db_->Flush(rocksdb::FlushOptions(), handles_);
  if (!flushed.ok()) return FromRocks(flushed, "flushing");
  for (auto* h : {handles_[kProcesses], handles_[kStacks], handles_[kSnapshots]}) {
    rocksdb::Status s = db_->CompactRange({}, h, nullptr, nullptr);
    if (!s.ok()) return FromRocks(s, "compacting");
  }
  return absl::OkStatus();
}

absl::Status Store::Clear() {
  rocksdb::WriteBatch wb;
  // Keys are at most 16 bytes: seventeen 0xff bytes sort after all of them.
  for (auto* h : handles_) wb.DeleteRange(h, "", std::string(17, '\xff'));
  if (absl::Status st = Write(&wb); !st.ok()) return st;
  // Flushed right away: range tombstones piling up in the memtable would
  // slow every later read (flushed, compaction drops them).
  return FromRocks(db_->Flush({}, handles_), "flushing after a clear");
}

uint64_t Store::DiskBytes() const {
  uint64_t total = 0;
  for (auto* h : handles_) {
    uint64_t v = 0;
    if (db_->GetIntProperty(h, rocksdb::DB::Properties::kTotalSstFilesSize, &v)) total += v;
  }
  return total;
}

}  // namespace cgoheap::server
