// The forwarder's symbolizer on object files a target could plant: the input
// is an ELF file (ours: .gopclntab, the symbol tables; libdw's: DWARF with
// inline chains), written to a file on tmpfs and opened the way the forwarder
// opens what a target names, then a target's mappings text naming it, and
// return addresses to symbolize.
//
// Input: the file itself (so any executable is a seed); the mapping's start
// and offset and the pcs come from its last 64 bytes.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "fuzz/fuzz_input.h"
#include "symbolize/symbolizer.h"

namespace {

// The symbolizer's cache of uncompressed debug copies (symbolize/debug_cache.h)
// goes to the temporary directory too: a file with compressed debug
// sections and a build id is copied there, so the cache's reading of the
// file is fuzzed as well, and nothing lands in the user's own cache.
std::string& ObjectPath() {
  static std::string* path = [] {
    const char* tmp = getenv("TMPDIR");
    std::string dir = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/cgoheap-fuzz-XXXXXX";
    FUZZ_CHECK(mkdtemp(dir.data()) != nullptr, "cannot make a temporary directory");
    setenv("CGOHEAP_CACHE_DIR", (dir + "/cache").c_str(), 1);
    return new std::string(dir + "/object");
  }();
  return *path;
}

struct RemoveAtExit {
  ~RemoveAtExit() {
    unlink(ObjectPath().c_str());
    std::string dir = ObjectPath();
    dir = dir.substr(0, dir.rfind('/'));
    std::error_code ignored;
    std::filesystem::remove_all(dir + "/cache", ignored);
    rmdir(dir.c_str());
  }
} remove_at_exit;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cgoheap;
  const size_t tail = size > 64 ? size - 64 : 0;
  fuzz::FuzzInput in(data + tail, size - tail);
  // Mostly where a non-PIE executable is mapped, so pcs land in its text.
  const bool usual = in.Next<uint8_t>() < 0xc0;
  const uint64_t start = 0x400000 + (usual ? 0 : uint64_t{in.Next<uint16_t>()} << 12);
  const uint64_t offset = usual ? 0 : uint64_t{in.Next<uint8_t>()} << 12;
  std::vector<uint64_t> pcs;
  // Return addresses: the call before each is inside the mapping too.
  for (int i = 0; i < 8; ++i) pcs.push_back(start + 1 + in.Next<uint32_t>() % (0x200000 - 1));
  const std::string file(reinterpret_cast<const char*>(data), size);
  const std::string& path = ObjectPath();
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  FUZZ_CHECK(fd >= 0 && write(fd, file.data(), file.size()) == static_cast<ssize_t>(file.size()),
             "cannot write the object file");
  close(fd);

  std::unique_ptr<ObjectFile> obj = ObjectFile::Open(path);
  std::vector<SymbolizedFrame> out;
  for (uint64_t pc : pcs) obj->Symbolize(obj->LinkAddress(pc, start, offset), &out);
  obj->LoadDebugInfo();
  for (uint64_t pc : pcs) obj->Symbolize(obj->LinkAddress(pc, start, offset) ^ 1, &out);

  ObjectCache objects;
  ProcessSymbolizer sym(&objects);
  sym.SetMappings(absl::StrFormat("%x %x %x %s\n", start, start + 0x200000, offset, path));
  out.clear();
  for (uint64_t pc : pcs) {
    FUZZ_CHECK(sym.Symbolize(pc, /*return_address=*/true, &out), "a pc inside the mapping was not covered");
  }
  FUZZ_CHECK(out.size() >= pcs.size(), "a pc got no frame at all (not even \"??\")");
  return 0;
}
