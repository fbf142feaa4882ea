#include "symbolize/debug_cache.h"

#include <dirent.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "symbolize/elf_image.h"
#include "symbolize/file_access.h"

namespace cgoheap {
namespace {

std::atomic<uint64_t> g_hits{0}, g_made{0};

// The most a copy may add to its original: a file that claims more (a
// decompression bomb a target could name) is left to libdw.
constexpr uint64_t kMaxInflatedBytes = uint64_t{256} << 20;
// Temporary files older than this are a writer that died.
constexpr time_t kStaleTempSeconds = 3600;

bool MakeDirs(const std::string& path) {
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    std::string part = path.substr(0, slash);
    if (mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return false;
    if (slash == std::string::npos) break;
  }
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid();
}

// A compressed debug section of the original: its index, its compression
// header and the zlib stream after it.
struct Inflatable {
  size_t index;
  const Elf64_Chdr* chdr;
  const uint8_t* stream;  // the zlib stream after the compression header
  size_t stream_size;
};

// The file's section headers and its zlib-compressed .debug_* sections,
// every offset checked against the file. False when it is not an ELF file
// this understands or has no compressed .debug_info.
bool FindInflatable(const uint8_t* data, size_t size, const Elf64_Ehdr** ehdr,
                    const Elf64_Shdr** shdrs, std::vector<Inflatable>* out) {
  if (size < sizeof(Elf64_Ehdr)) return false;
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(data);
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_ident[EI_DATA] != ELFDATA2LSB || eh->e_shentsize != sizeof(Elf64_Shdr) ||
      eh->e_shnum == 0 || eh->e_shstrndx == SHN_UNDEF || eh->e_shstrndx >= eh->e_shnum ||
      eh->e_shoff % alignof(Elf64_Shdr) != 0 || eh->e_shoff > size ||
      size - eh->e_shoff < uint64_t{eh->e_shnum} * sizeof(Elf64_Shdr)) {
    return false;
  }
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(data + eh->e_shoff);
  const Elf64_Shdr& names = sh[eh->e_shstrndx];
  if (names.sh_type != SHT_STRTAB || names.sh_offset > size ||
      size - names.sh_offset < names.sh_size) {
    return false;
  }
  const char* strtab = reinterpret_cast<const char*>(data + names.sh_offset);
  uint64_t total = 0;
  bool has_info = false;
  out->clear();
  for (size_t i = 0; i < eh->e_shnum; ++i) {
    const Elf64_Shdr& s = sh[i];
    if ((s.sh_flags & SHF_COMPRESSED) == 0 || s.sh_type != SHT_PROGBITS ||
        s.sh_name >= names.sh_size) {
      continue;
    }
    const char* name = strtab + s.sh_name;
    if (memchr(name, '\0', names.sh_size - s.sh_name) == nullptr ||
        strncmp(name, ".debug_", 7) != 0) {
      continue;
    }
    if (s.sh_offset > size || size - s.sh_offset < s.sh_size || s.sh_size < sizeof(Elf64_Chdr) ||
        s.sh_offset % alignof(Elf64_Chdr) != 0) {
      return false;
    }
    const auto* chdr = reinterpret_cast<const Elf64_Chdr*>(data + s.sh_offset);
    if (chdr->ch_type != ELFCOMPRESS_ZLIB) return false;  // zstd: left to libdw
    total += chdr->ch_size;
    if (chdr->ch_size > kMaxInflatedBytes || total > kMaxInflatedBytes) return false;
    out->push_back({i, chdr, data + s.sh_offset + sizeof(Elf64_Chdr),
                    static_cast<size_t>(s.sh_size - sizeof(Elf64_Chdr))});
    has_info |= strcmp(name, ".debug_info") == 0;
  }
  *ehdr = eh;
  *shdrs = sh;
  // Only a file whose DWARF is its own: with the copy in its place libdw
  // would look for a separate debug file beside the copy, not the original.
  return has_info;
}

bool WriteAll(int fd, const void* p, size_t n) {
  const auto* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Inflates one section's stream to fd; true when it is exactly `want` bytes.
bool InflateTo(const Inflatable& s, uint64_t want, int fd) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) return false;
  std::vector<unsigned char> buf(1 << 18);
  z.next_in = const_cast<Bytef*>(s.stream);
  uint64_t in_left = s.stream_size, written = 0;
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (z.avail_in == 0) {
      z.avail_in = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
      in_left -= z.avail_in;
    }
    z.next_out = buf.data();
    z.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&z, Z_NO_FLUSH);
    size_t got = buf.size() - z.avail_out;
    written += got;
    if ((rc != Z_OK && rc != Z_STREAM_END) || written > want || !WriteAll(fd, buf.data(), got)) {
      rc = Z_DATA_ERROR;
      break;
    }
    if (rc == Z_OK && got == 0 && z.avail_in == 0 && in_left == 0) rc = Z_DATA_ERROR;  // truncated
  }
  inflateEnd(&z);
  return rc == Z_STREAM_END && written == want;
}

bool PadTo(int fd, uint64_t* at, uint64_t align) {
  static const char zeros[64] = {};
  if (align < 8) align = 8;
  if (align > 4096 || (align & (align - 1)) != 0) return false;
  uint64_t pad = (align - *at % align) % align;
  *at += pad;
  return WriteAll(fd, zeros, pad);
}

// Writes the copy to fd: the original, then each section inflated, then the
// new section header table; then points e_shoff at that table.
bool WriteCopy(int fd, const uint8_t* data, size_t size, const Elf64_Ehdr& eh,
               const Elf64_Shdr* shdrs, const std::vector<Inflatable>& sections) {
  if (!WriteAll(fd, data, size)) return false;
  std::vector<Elf64_Shdr> table(shdrs, shdrs + eh.e_shnum);
  uint64_t at = size;
  for (const Inflatable& s : sections) {
    if (!PadTo(fd, &at, s.chdr->ch_addralign)) return false;
    Elf64_Shdr& out = table[s.index];
    out.sh_offset = at;
    out.sh_size = s.chdr->ch_size;
    out.sh_addralign = s.chdr->ch_addralign;
    out.sh_flags &= ~static_cast<Elf64_Xword>(SHF_COMPRESSED);
    if (!InflateTo(s, s.chdr->ch_size, fd)) return false;
    at += s.chdr->ch_size;
  }
  if (!PadTo(fd, &at, alignof(Elf64_Shdr)) ||
      !WriteAll(fd, table.data(), table.size() * sizeof(Elf64_Shdr))) {
    return false;
  }
  Elf64_Ehdr head = eh;
  head.e_shoff = at;
  return pwrite(fd, &head, sizeof head, 0) == static_cast<ssize_t>(sizeof head) &&
         fdatasync(fd) == 0;
}

// A copy in the cache is used only if this user wrote it (a file another
// user planted in a shared directory is not), it carries the same build id
// as the original, and it is whole: its section header table ends the file
// (as WriteCopy puts it) and every section lies inside it.
bool UsableCopy(const std::string& path, const std::string& id, uint64_t original_size) {
  int fd = OpenRegularFile(path.c_str());
  if (fd < 0) return false;
  struct stat st;
  bool ok = fstat(fd, &st) == 0 && st.st_uid == geteuid() &&
            static_cast<uint64_t>(st.st_size) > original_size;
  if (ok) {
    ElfImage copy;
    char copy_id[128];
    ok = copy.OpenFd(fd) && copy.BuildId(copy_id, sizeof copy_id) > 0 && id == copy_id;
    if (ok) {
      const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(copy.data());
      ok = eh->e_shentsize == sizeof(Elf64_Shdr) && eh->e_shoff <= copy.size() &&
           copy.size() - eh->e_shoff == uint64_t{eh->e_shnum} * sizeof(Elf64_Shdr);
      const auto* sh = reinterpret_cast<const Elf64_Shdr*>(copy.data() + (ok ? eh->e_shoff : 0));
      for (size_t i = 0; ok && i < eh->e_shnum; ++i) {
        ok = sh[i].sh_type == SHT_NOBITS ||
             (sh[i].sh_offset <= copy.size() && copy.size() - sh[i].sh_offset >= sh[i].sh_size);
      }
    }
  }
  close(fd);
  return ok;
}

// Keeps the cache under kDebugCacheMaxBytes, least recently used first
// (a copy's modification time is renewed each time it is used); never
// removes keep. Also clears temporary files a dead writer left.
void Evict(const std::string& dir, const std::string& keep) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  struct Entry {
    std::string path;
    time_t mtime;
    uint64_t size;
  };
  std::vector<Entry> copies;
  uint64_t total = 0;
  time_t now = time(nullptr);
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name, path = dir + "/" + name;
    struct stat st;
    if (lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (name.starts_with(".tmp-")) {
      if (now - st.st_mtime > kStaleTempSeconds) unlink(path.c_str());
    } else if (name.ends_with(".elf")) {
      copies.push_back({path, st.st_mtime, static_cast<uint64_t>(st.st_size)});
      total += static_cast<uint64_t>(st.st_size);
    }
  }
  closedir(d);
  std::sort(copies.begin(), copies.end(),
            [](const Entry& a, const Entry& b) { return a.mtime < b.mtime; });
  for (const Entry& c : copies) {
    if (total <= kDebugCacheMaxBytes) break;
    if (c.path == keep) continue;
    if (unlink(c.path.c_str()) == 0) total -= c.size;
  }
}

}  // namespace

std::string DebugCacheDir() {
  std::string base;
  if (const char* dir = getenv("CGOHEAP_CACHE_DIR"); dir != nullptr) {
    if (*dir != '/') return "";  // empty: no cache; relative: refused
    base = dir;
  } else if (const char* xdg = getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg == '/') {
    base = std::string(xdg) + "/cgoheap";
  } else if (const char* home = getenv("HOME"); home != nullptr && *home == '/') {
    base = std::string(home) + "/.cache/cgoheap";
  } else {
    return "";
  }
  std::string dir = base + "/debug";
  return MakeDirs(dir) ? dir : "";
}

std::string UncompressedDebugCopy(const ElfImage& elf) {
  const Elf64_Ehdr* eh;
  const Elf64_Shdr* shdrs;
  std::vector<Inflatable> sections;
  if (elf.data() == nullptr || !FindInflatable(elf.data(), elf.size(), &eh, &shdrs, &sections)) {
    return "";
  }
  char id[128];
  if (elf.BuildId(id, sizeof id) == 0) return "";
  std::string dir = DebugCacheDir();
  if (dir.empty()) return "";
  std::string path = dir + "/" + id + "-" + std::to_string(elf.size()) + ".elf";
  if (UsableCopy(path, id, elf.size())) {
    utimensat(AT_FDCWD, path.c_str(), nullptr, AT_SYMLINK_NOFOLLOW);  // recently used
    g_hits.fetch_add(1, std::memory_order_relaxed);
    return path;
  }
  std::string tmp = dir + "/.tmp-XXXXXX";
  int fd = mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return "";
  // The original may shrink while it is copied (file_access.h): a page read
  // as zeros then, and the copy is not kept.
  const uint64_t zeroed = g_zeroed_file_pages.load(std::memory_order_relaxed);
  bool ok = WriteCopy(fd, elf.data(), elf.size(), *eh, shdrs, sections) &&
            g_zeroed_file_pages.load(std::memory_order_relaxed) == zeroed;
  ok = close(fd) == 0 && ok && rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) {
    unlink(tmp.c_str());
    return "";
  }
  g_made.fetch_add(1, std::memory_order_relaxed);
  Evict(dir, path);
  return path;
}

DebugCacheCounts DebugCacheCountsSoFar() {
  return {g_hits.load(std::memory_order_relaxed), g_made.load(std::memory_order_relaxed)};
}

}  // namespace cgoheap
