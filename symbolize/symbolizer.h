// Turns the raw return addresses of one process into functions, files and
// lines. Runs in the forwarder, never in the target.
//
// Go PCs come from .gopclntab (right, and present in `-s -w` binaries); C PCs
// from DWARF through libdw, with inline chains expanded, else from the ELF
// symbol tables. A return address is looked up minus one (the call).
//
//   ProcessSymbolizer sym(&objects);
//   sym.SetMappings(ring_maps_text);           // "start end offset path" lines
//   std::vector<SymbolizedFrame> out;
//   sym.Symbolize(pc, /*return_address=*/true, &out);
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/synchronization/mutex.h"

struct Dwfl_Module;

namespace cgoheap {

class SymbolIndex;

struct SymbolizedFrame {
  std::string function;
  std::string file;
  uint32_t line = 0;
  std::string object;
  bool go = false;
  bool own = false;  // the program's own code (ObjectFile::own_basis says how decided)
  std::string build_id;  // the object's (ObjectFile::build_id)
};

// One ELF file, opened once and shared by every process that maps it.
// Thread-safe (symbolization is serialized per object: libdw is not).
class ObjectFile {
 public:
  static std::unique_ptr<ObjectFile> Open(const std::string& path);
  ~ObjectFile();

  // link_addr: the address as linked (runtime pc minus the load bias).
  void Symbolize(uint64_t link_addr, std::vector<SymbolizedFrame>* out);
  const std::string& path() const { return path_; }
  const std::string& build_id() const { return build_id_; }
  // From a Go executable's build info: "go1.22.12", its main module's path
  // and its main package's import path ("" when not Go or not recorded).
  const std::string& go_version() const { return go_version_; }
  const std::string& go_main_module() const { return go_main_module_; }
  const std::string& go_main_package() const { return go_main_package_; }
  // For a Go executable: how its frames are marked `own` (the program's own
  // code): "main module M (build info)", or, without a module, package main
  // and C code in its directories. Empty for other objects (never own).
  const std::string& own_basis() const { return own_basis_; }
  // Reads the debugging information and indexes the symbols now (they are
  // otherwise read on first use).
  void LoadDebugInfo();
  // Converts a runtime pc in a mapping (start, file offset) to a link address.
  uint64_t LinkAddress(uint64_t pc, uint64_t map_start, uint64_t map_offset) const;

 private:
  struct Impl;
  explicit ObjectFile(std::string path);
  std::string path_;
  std::string build_id_;
  std::string go_version_, go_main_module_, go_main_package_;
  std::string own_basis_;
  // Own Go packages' source directories: cgo's C code of a package lives in
  // its directory, so a C frame there is the program's own too.
  std::unordered_set<std::string> own_dirs_;
  bool OwnGoFunction(std::string_view function) const;
  void FindOwnDirectories();
  // libdw's module for the file, reported on first use (under impl_->mu).
  Dwfl_Module* Module();
  // Its symbols by address, indexed on first use (under impl_->mu).
  const SymbolIndex& Symbols();
  std::unique_ptr<Impl> impl_;
};

// Cache of opened objects by path. Thread-safe.
class ObjectCache {
 public:
  ObjectFile* Get(const std::string& path);

 private:
  absl::Mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<ObjectFile>> objects_ ABSL_GUARDED_BY(mu_);
};

// The address space of one process. Not thread-safe.
class ProcessSymbolizer {
 public:
  explicit ProcessSymbolizer(ObjectCache* objects) : objects_(objects) {}

  // Replaces the mappings with "start end offset path" lines (hex numbers), or
  // /proc/PID/maps content (detected by its "start-end perms" form).
  void SetMappings(std::string_view text);
  // Adds mappings to those known (same forms). /proc/PID/maps of a process
  // that is exiting can be partial: added to the agent's own snapshot, it
  // can only complete it.
  void AddMappings(std::string_view text);
  bool Covers(uint64_t pc) const;
  // Appends the frames of pc (more than one when calls were inlined);
  // innermost first. Returns false when no mapping covers pc.
  bool Symbolize(uint64_t pc, bool return_address, std::vector<SymbolizedFrame>* out);
  // Opens every mapped object now, while the files certainly still exist.
  void OpenAll();
  // The mapped object with Go build information at the lowest address that
  // may be opened, or null: for a C program, the Go library it links
  // (-buildmode=c-shared), whose Go release is the one its Go code runs.
  ObjectFile* GoObject();
  // The target's own credentials, when the forwarder runs with others (a
  // sidecar as root, say): files the target could not read itself are never
  // opened for it, whatever its mappings claim, so nothing it could not see
  // is symbolized and published for it.
  void ReadAs(uid_t uid, gid_t gid);
  // Whether path may be opened for this process.
  bool MayOpen(const std::string& path);

 private:
  struct Mapping {
    uint64_t end, offset;
    std::string path;
  };
  ObjectCache* objects_;
  bool restricted_ = false;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  std::unordered_map<std::string, bool> may_open_;  // by path, when restricted
  std::map<uint64_t, Mapping> mappings_;  // by start
  std::unordered_map<uint64_t, std::vector<SymbolizedFrame>> cache_;
};

}  // namespace cgoheap
