#include "symbolize/symbolizer.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <unistd.h>

#include <cxxabi.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/go_names.h"
#include "symbolize/debug_cache.h"
#include "symbolize/elf_image.h"
#include "symbolize/file_access.h"
#include "symbolize/go_module.h"
#include "symbolize/gopclntab.h"
#include "symbolize/symbol_index.h"

namespace cgoheap {
namespace {

// The hex of the module's build id; empty when it has none.
std::string ModuleBuildId(Dwfl_Module* mod) {
  const unsigned char* bits = nullptr;
  GElf_Addr vaddr;
  int n = dwfl_module_build_id(mod, &bits, &vaddr);
  std::string hex;
  char byte[3];
  for (int i = 0; i < n; ++i) {
    snprintf(byte, sizeof byte, "%02x", bits[i]);
    hex += byte;
  }
  return hex;
}

// Where libdw's search looks for a separate debug file by build id:
// /usr/lib/debug/.build-id/xx/rest.debug; empty without one.
std::string BuildIdDebugPath(const std::string& id) {
  if (id.size() <= 2) return "";
  return "/usr/lib/debug/.build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug";
}

// Where a separate debug file of `file_name` may be, as libdw's own search
// (dwfl_standard_find_debuginfo over elfutils' default path
// ":.debug:/usr/lib/debug") looks for it: by build id under
// /usr/lib/debug/.build-id/, and by debug link (FILE.debug without one)
// beside the file, in .debug/ beside it and under /usr/lib/debug, with and
// without the file's directory. True when any of them exists.
bool LocalDebugFileMayExist(Dwfl_Module* mod, const char* file_name, const char* debuglink) {
  if (std::string by_id = BuildIdDebugPath(ModuleBuildId(mod));
      !by_id.empty() && access(by_id.c_str(), F_OK) == 0) {
    return true;
  }
  std::string file = file_name != nullptr ? file_name : "";
  std::string name = debuglink != nullptr && *debuglink != '\0' ? debuglink : "";
  if (name.empty()) {
    if (file.empty()) return false;
    name = file.substr(file.rfind('/') + 1) + ".debug";
  }
  if (name[0] == '/') return access(name.c_str(), F_OK) == 0;
  std::vector<std::string> dirs;
  if (!file.empty()) {
    size_t slash = file.rfind('/');
    dirs.push_back(slash == std::string::npos ? "." : file.substr(0, slash));
    if (char* real = realpath(file.c_str(), nullptr); real != nullptr) {
      std::string r = real;
      free(real);
      dirs.push_back(r.substr(0, r.rfind('/')));
    }
  }
  std::vector<std::string> candidates = {"/usr/lib/debug/" + name};
  for (const std::string& dir : dirs) {
    candidates.push_back(dir + "/" + name);
    candidates.push_back(dir + "/.debug/" + name);
    if (dir[0] == '/') candidates.push_back("/usr/lib/debug" + dir + "/" + name);
  }
  for (const std::string& c : candidates) {
    if (access(c.c_str(), F_OK) == 0) return true;
  }
  return false;
}

// Distribution debug files are compressed: where the module's debug file by
// build id is, libdw gets the cached uncompressed copy of it instead
// (symbolize/debug_cache.h). The copy is opened here, not by the standard
// search: that search keeps the Elf of the file it found for the module,
// whatever file descriptor is returned. -1 when there is no copy to give.
int CachedDebugCopy(Dwfl_Module* mod, char** debuginfo_file_name) {
  const std::string want = ModuleBuildId(mod);
  std::string by_id = BuildIdDebugPath(want);
  if (by_id.empty()) return -1;
  int fd = OpenRegularFile(by_id.c_str());
  if (fd < 0) return -1;
  ElfImage debug;
  std::string copy;
  char id[128];
  // The file's own build id must be the module's, as libdw's search checks.
  if (debug.OpenFd(fd) && debug.BuildId(id, sizeof id) > 0 && want == id) {
    copy = UncompressedDebugCopy(debug);
  }
  close(fd);
  if (copy.empty()) return -1;
  int copy_fd = OpenRegularFile(copy.c_str());
  if (copy_fd < 0) return -1;
  *debuginfo_file_name = strdup(copy.c_str());
  if (*debuginfo_file_name == nullptr) {
    close(copy_fd);
    return -1;
  }
  return copy_fd;
}

// libdw's standard search for separate debug information ends, when no
// local file has it, by asking debuginfod servers; to learn whether any are
// configured it first loads libdebuginfod and libcurl with some thirty
// libraries (about 6 ms of every `cgoheap run`, measured with perf stat).
// Without DEBUGINFOD_URLS (cgoheap unsets it unless --debuginfod) there is
// no server to ask: the standard search runs only when a local file it
// would find exists.
int FindDebuginfo(Dwfl_Module* mod, void** userdata, const char* modname, Dwarf_Addr base,
                  const char* file_name, const char* debuglink_file, GElf_Word debuglink_crc,
                  char** debuginfo_file_name) {
  const char* urls = getenv("DEBUGINFOD_URLS");
  if ((urls == nullptr || *urls == '\0') &&
      !LocalDebugFileMayExist(mod, file_name, debuglink_file)) {
    errno = ENOENT;  // as the standard search leaves it
    return -1;
  }
  if (int fd = CachedDebugCopy(mod, debuginfo_file_name); fd >= 0) return fd;
  return dwfl_standard_find_debuginfo(mod, userdata, modname, base, file_name, debuglink_file,
                                      debuglink_crc, debuginfo_file_name);
}

const Dwfl_Callbacks kOfflineCallbacks = {
    .find_elf = nullptr,
    .find_debuginfo = FindDebuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = nullptr,
};

// Go names assembly functions "pkg.fn.abi0" in some tables and not others;
// show one name whatever the binary kept. A generic function's name carries
// its shape arguments ("pkg.Map[go.shape.int,go.shape.string]"): shown as
// Go's own tools show it, "pkg.Map[...]".
std::string GoName(std::string_view name) {
  constexpr std::string_view kAbi0 = ".abi0";
  if (name.size() > kAbi0.size() && name.substr(name.size() - kAbi0.size()) == kAbi0) {
    name.remove_suffix(kAbi0.size());
  }
  std::string out;
  out.reserve(name.size());
  int depth = 0;
  for (char c : name) {
    if (c == '[' && depth++ == 0) {
      out += "[...]";
    } else if (c == ']' && depth > 0) {
      --depth;
    } else if (depth == 0) {
      out += c;
    }
  }
  return out;
}

// Only a C++ function's mangled name (_Z...) is demangled: __cxa_demangle
// also reads a bare type encoding, and many C names are one ("i" is "int",
// "re" "long double restrict", "Pc" "char*").
std::string Demangle(const char* name) {
  if (name == nullptr) return {};
  if (name[0] != '_' || name[1] != 'Z') return name;
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && d != nullptr ? d : name;
  free(d);
  return out;
}

const char* DieName(Dwarf_Die* die) {
  Dwarf_Attribute attr;
  Dwarf_Die origin;
  const char* name = dwarf_diename(die);
  if (name != nullptr) return name;
  if (dwarf_attr_integrate(die, DW_AT_abstract_origin, &attr) != nullptr &&
      dwarf_formref_die(&attr, &origin) != nullptr) {
    return dwarf_diename(&origin);
  }
  return nullptr;
}

// A function's name as the user's other tools show it: the demangled linkage
// name of C++ ("kv::Table::Insert(int)": namespace, class, parameters), the
// plain name of C. An inlined instance takes both from its abstract origin.
// Only a C++ mangled linkage name (_Z...) is taken: C code has linkage names
// too where it renames its symbols (glibc's __GI_ aliases), and those are
// not what its users call it.
std::string FunctionName(Dwarf_Die* die) {
  Dwarf_Attribute attr;
  for (int at : {DW_AT_linkage_name, DW_AT_MIPS_linkage_name}) {
    const char* linkage = dwarf_formstring(dwarf_attr_integrate(die, at, &attr));
    if (linkage != nullptr && linkage[0] == '_' && linkage[1] == 'Z') return Demangle(linkage);
  }
  return Demangle(DieName(die));
}

}  // namespace

struct ObjectFile::Impl {
  absl::Mutex mu;
  ElfImage elf;
  GoPclntab go;
  bool has_go = false;
  uint64_t exec_vaddr = 0, exec_offset = 0;
  bool et_dyn = false;
  Dwfl* dwfl = nullptr;
  Dwfl_Module* module = nullptr;
  bool opened = false;      // the file is an ELF file Open could read
  bool dwfl_tried = false;  // Module() ran
  int fd = -1;
  // The symbol tables, by address (ObjectFile::Symbols).
  std::optional<SymbolIndex> symbols;

  ~Impl() {
    if (dwfl != nullptr) dwfl_end(dwfl);
    if (fd >= 0) close(fd);
  }
};

ObjectFile::ObjectFile(std::string path) : path_(std::move(path)), impl_(new Impl) {}
ObjectFile::~ObjectFile() = default;

std::unique_ptr<ObjectFile> ObjectFile::Open(const std::string& path) {
  std::unique_ptr<ObjectFile> obj(new ObjectFile(path));
  Impl& im = *obj->impl_;
  // Opened as untrusted (symbolize/file_access.h): a target names it.
  im.fd = OpenRegularFile(path.c_str());
  if (im.fd < 0 || !im.elf.OpenFd(im.fd)) return obj;  // unreadable: names stay "??"
  char id[128];
  if (im.elf.BuildId(id, sizeof id) > 0) obj->build_id_ = id;
  uint64_t filesz;
  im.elf.ExecSegment(&im.exec_vaddr, &im.exec_offset, &filesz);
  im.et_dyn = im.elf.IsSharedObject();
  GoModule module;
  if (ReadGoModule(im.elf, &module)) {
    im.has_go = im.go.Init(module.pclntab, module.pclntab_size, module.text_start);
    im.go.SetFuncData(module.gofunc, module.gofunc_size);
  }
  obj->go_version_ = module.version;
  obj->go_main_module_ = module.main_module;
  obj->go_main_package_ = module.main_package;
  if (im.has_go) obj->FindOwnDirectories();
  im.opened = true;
  return obj;
}

// libdw's view of the file, made when first needed: its DWARF may be read
// from an uncompressed copy (symbolize/debug_cache.h), which is made then.
Dwfl_Module* ObjectFile::Module() {
  Impl& im = *impl_;
  if (im.module != nullptr || !im.opened || im.dwfl_tried) return im.module;
  im.dwfl_tried = true;
  std::string copy = UncompressedDebugCopy(im.elf);
  int fd = copy.empty() ? -1 : OpenRegularFile(copy.c_str());
  if (fd < 0) {
    copy = path_;
    fd = dup(im.fd);
  }
  im.dwfl = dwfl_begin(&kOfflineCallbacks);
  if (im.dwfl == nullptr) {
    if (fd >= 0) close(fd);
    return nullptr;
  }
  dwfl_report_begin(im.dwfl);
  // base 0: addresses of an ET_DYN file are its link-time addresses.
  im.module = dwfl_report_elf(im.dwfl, path_.c_str(), copy.c_str(), fd, 0, false);
  dwfl_report_end(im.dwfl, nullptr, nullptr);
  return im.module;
}

// Built on first use: libdw's symbols when it has the module, else the
// file's own tables.
const SymbolIndex& ObjectFile::Symbols() {
  Impl& im = *impl_;
  if (!im.symbols) {
    Dwfl_Module* module = Module();
    if (module != nullptr) im.symbols = SymbolIndex::FromDwfl(module);
    if (!im.symbols || im.symbols->symbols() == 0) im.symbols = SymbolIndex::FromElf(im.elf);
  }
  return *im.symbols;
}

namespace {

std::string_view Dir(std::string_view file) {
  size_t slash = file.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : file.substr(0, slash);
}

}  // namespace

bool ObjectFile::OwnGoFunction(std::string_view function) const {
  std::string_view pkg = GoPackageOf(function);
  if (pkg == "main") return true;
  const std::string& m = go_main_module_;
  return !m.empty() && pkg.starts_with(m) && (pkg.size() == m.size() || pkg[m.size()] == '/');
}

void ObjectFile::FindOwnDirectories() {
  own_basis_ = go_main_module_.empty()
                   ? "package main and the C code in its directory (the executable's build info "
                     "names no module: a GOPATH or file-list build)"
                   : "main module " + go_main_module_ + " (the executable's build info)";
  const GoPclntab& tab = impl_->go;
  GoPclntab::Func f;
  for (uint32_t i = 0; i < tab.num_funcs(); ++i) {
    if (!tab.FuncAt(i, &f) || !OwnGoFunction(tab.FuncName(f))) continue;
    std::string_view file;
    int32_t line;
    if (tab.Line(f, f.entry, &file, &line) && !file.ends_with("_cgo_gotypes.go") &&
        !Dir(file).empty()) {
      own_dirs_.emplace(Dir(file));
    }
  }
}

void ObjectFile::LoadDebugInfo() {
  Impl& im = *impl_;
  absl::MutexLock lock(&im.mu);
  Dwfl_Module* module = Module();
  if (module == nullptr) return;
  Dwarf_Addr bias = 0;
  if (Dwarf* dw = dwfl_module_getdwarf(module, &bias)) {
    Dwarf_Aranges* aranges = nullptr;
    size_t n = 0;
    dwarf_getaranges(dw, &aranges, &n);
  }
  Symbols();
}

uint64_t ObjectFile::LinkAddress(uint64_t pc, uint64_t map_start, uint64_t map_offset) const {
  // file offset of pc, then the virtual address at that offset.
  uint64_t file_off = pc - map_start + map_offset;
  return file_off - impl_->exec_offset + impl_->exec_vaddr;
}

void ObjectFile::Symbolize(uint64_t addr, std::vector<SymbolizedFrame>* out) {
  Impl& im = *impl_;
  absl::MutexLock lock(&im.mu);
  GoPclntab::Func f;
  if (im.has_go && im.go.FindFunc(addr, &f)) {
    GoPclntab::Frame frames[32];
    int n = im.go.Frames(f, addr, frames, 32);
    if (n == 0) {  // no line: the function alone
      frames[0] = GoPclntab::Frame{im.go.FuncName(f), {}, 0};
      n = 1;
    }
    for (int i = 0; i < n; ++i) {
      SymbolizedFrame fr;
      fr.function = GoName(frames[i].function);
      fr.file = std::string(frames[i].file);
      fr.line = frames[i].line > 0 ? frames[i].line : 0;
      fr.object = path_;
      fr.go = true;
      fr.own = !own_basis_.empty() && OwnGoFunction(fr.function);
      out->push_back(std::move(fr));
    }
    return;
  }
  size_t first = out->size();
  auto symbol = [&] {  // the symbol tables' name for addr, demangled; "" when none
    std::string_view name = Symbols().Find(addr);
    return name.empty() ? std::string() : Demangle(std::string(name).c_str());
  };
  Dwfl_Module* module = Module();
  if (module != nullptr) {
    Dwarf_Addr bias = 0;
    Dwarf_Die* cu = dwfl_module_addrdie(module, addr, &bias);
    Dwarf_Die* scopes = nullptr;
    int n = cu != nullptr ? dwarf_getscopes(cu, addr - bias, &scopes) : 0;
    if (n > 0) {
      // After an inlined instance, dwarf_getscopes continues with the scopes
      // of its abstract definition; the concrete chain (where it was inlined)
      // comes from walking out of the innermost DIE itself.
      Dwarf_Die inner = scopes[0];
      free(scopes);
      scopes = nullptr;
      n = dwarf_getscopes_die(&inner, &scopes);
    }
    // The innermost location comes from the line table; each inlined scope's
    // DW_AT_call_file/call_line is the location in the scope around it.
    const char* file = nullptr;
    int line = 0;
    if (Dwfl_Line* l = dwfl_module_getsrc(module, addr)) {
      file = dwfl_lineinfo(l, nullptr, &line, nullptr, nullptr, nullptr);
    }
    Dwarf_Files* files = nullptr;
    size_t nfiles = 0;
    if (cu != nullptr) dwarf_getsrcfiles(cu, &files, &nfiles);
    for (int i = 0; i < n; ++i) {
      int tag = dwarf_tag(&scopes[i]);
      if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_subprogram) continue;
      SymbolizedFrame fr;
      fr.function = FunctionName(&scopes[i]);
      fr.file = file ? file : "";
      fr.line = line > 0 ? line : 0;
      fr.object = path_;
      out->push_back(std::move(fr));
      if (tag == DW_TAG_subprogram) break;
      Dwarf_Attribute attr;
      Dwarf_Word cf = 0, cl = 0;
      file = nullptr;
      line = 0;
      if (dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &attr), &cf) == 0 &&
          files != nullptr && cf < nfiles) {
        file = dwarf_filesrc(files, cf, nullptr, nullptr);
      }
      if (dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &attr), &cl) == 0) {
        line = static_cast<int>(cl);
      }
    }
    free(scopes);
    if (out->size() == first) {  // no DWARF scope: symbol table, maybe a line
      if (std::string name = symbol(); !name.empty()) {
        SymbolizedFrame fr;
        fr.function = std::move(name);
        fr.file = file ? file : "";
        fr.line = line > 0 ? line : 0;
        fr.object = path_;
        out->push_back(std::move(fr));
      }
    } else if (out->back().function.empty()) {
      out->back().function = symbol();
    }
  }
  if (out->size() == first) {
    SymbolizedFrame fr;
    fr.function = symbol();
    if (fr.function.empty()) fr.function = "??";
    fr.object = path_;
    out->push_back(std::move(fr));
  }
  if (!own_dirs_.empty()) {
    for (size_t i = first; i < out->size(); ++i) {
      (*out)[i].own = own_dirs_.contains(std::string(Dir((*out)[i].file)));
    }
  }
}

ObjectFile* ObjectCache::Get(const std::string& path) {
  absl::MutexLock lock(&mu_);
  auto& slot = objects_[path];
  if (slot == nullptr) slot = ObjectFile::Open(path);
  return slot.get();
}

void ProcessSymbolizer::SetMappings(std::string_view text) {
  mappings_.clear();
  cache_.clear();
  AddMappings(text);
}

void ProcessSymbolizer::AddMappings(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string line(text.substr(pos, nl - pos));
    pos = nl + 1;
    unsigned long long start, end, offset;
    char perms[8];
    int path_at = -1;
    // /proc/PID/maps: "start-end perms offset dev inode   path"
    if (sscanf(line.c_str(), "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &offset,
               &path_at) == 4 && path_at > 0) {
      if (strlen(perms) < 3 || perms[2] != 'x') continue;
    } else if (sscanf(line.c_str(), "%llx %llx %llx %n", &start, &end, &offset, &path_at) != 3 ||
               path_at <= 0) {
      continue;  // neither form: the ring's snapshot is "start end offset path"
    }
    std::string_view path = std::string_view(line).substr(path_at);
    if (path.empty() || path[0] != '/') continue;
    if (path.ends_with(" (deleted)")) path.remove_suffix(10);
    std::string file(path);
    if (!MayOpen(file)) continue;
    mappings_[start] = Mapping{end, offset, std::move(file)};
  }
}

void ProcessSymbolizer::ReadAs(uid_t uid, gid_t gid) {
  restricted_ = true;
  uid_ = uid;
  gid_ = gid;
  may_open_.clear();
}

bool ProcessSymbolizer::MayOpen(const std::string& path) {
  if (!restricted_) return true;
  auto [it, fresh] = may_open_.try_emplace(path, false);
  if (fresh) it->second = MayRead(path, uid_, gid_);
  return it->second;
}

bool ProcessSymbolizer::Covers(uint64_t pc) const {
  auto it = mappings_.upper_bound(pc);
  if (it == mappings_.begin()) return false;
  --it;
  return pc < it->second.end;
}

void ProcessSymbolizer::OpenAll() {
  for (const auto& [start, m] : mappings_) objects_->Get(m.path);
}

ObjectFile* ProcessSymbolizer::GoObject() {
  for (const auto& [start, m] : mappings_) {
    if (!MayOpen(m.path)) continue;
    if (ObjectFile* obj = objects_->Get(m.path); obj != nullptr && !obj->go_version().empty()) {
      return obj;
    }
  }
  return nullptr;
}

bool ProcessSymbolizer::Symbolize(uint64_t pc, bool return_address,
                                  std::vector<SymbolizedFrame>* out) {
  uint64_t lookup = return_address ? pc - 1 : pc;
  if (auto hit = cache_.find(lookup); hit != cache_.end()) {
    out->insert(out->end(), hit->second.begin(), hit->second.end());
    return true;
  }
  auto it = mappings_.upper_bound(lookup);
  if (it == mappings_.begin()) return false;
  --it;
  if (lookup >= it->second.end) return false;
  ObjectFile* obj = objects_->Get(it->second.path);
  std::vector<SymbolizedFrame> frames;
  obj->Symbolize(obj->LinkAddress(lookup, it->first, it->second.offset), &frames);
  for (SymbolizedFrame& f : frames) f.build_id = obj->build_id();
  out->insert(out->end(), frames.begin(), frames.end());
  cache_.emplace(lookup, std::move(frames));
  return true;
}

}  // namespace cgoheap
