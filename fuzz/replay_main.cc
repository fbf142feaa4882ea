// The main() of a fuzz target in builds without libFuzzer (GCC, every CI
// run): runs every input named (a directory: every file in it, the seed
// corpus and the kept crashes), then deterministic mutations of them, so the
// target's code runs on malformed input on every test run, not only when
// someone fuzzes. With clang, CGOHEAP_FUZZ=ON links the same target with
// libFuzzer instead (./dev.sh fuzz).
//
//   fuzz_ring_reader [--mutations=N] [--seed=S] [--optional=FILE]... fuzz/corpus/ring_reader fuzz/crashes/ring_reader
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

struct Rng {
  uint64_t s;
  uint64_t operator()() {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
  }
  size_t Below(size_t n) { return n == 0 ? 0 : (*this)() % n; }
};

void Mutate(std::string* s, Rng& rng) {
  static constexpr unsigned char kInteresting[] = {0, 1, 0x7f, 0x80, 0xff, 0x40, 0x3f};
  switch (rng() % 7) {
    case 0:  // flip a bit
      if (!s->empty()) (*s)[rng.Below(s->size())] ^= static_cast<char>(1u << rng.Below(8));
      break;
    case 1:  // an interesting byte
      if (!s->empty()) (*s)[rng.Below(s->size())] = static_cast<char>(kInteresting[rng.Below(7)]);
      break;
    case 2:  // a random 8-byte word
      if (s->size() >= 8) {
        uint64_t w = rng();
        s->replace(rng.Below(s->size() - 7), 8, reinterpret_cast<const char*>(&w), 8);
      }
      break;
    case 3:  // cut the end
      s->resize(rng.Below(s->size() + 1));
      break;
    case 4:  // erase a run
      if (!s->empty()) {
        size_t at = rng.Below(s->size());
        s->erase(at, 1 + rng.Below(std::min<size_t>(64, s->size() - at)));
      }
      break;
    case 5: {  // insert random bytes
      std::string ins(1 + rng.Below(16), '\0');
      for (char& c : ins) c = static_cast<char>(rng());
      s->insert(rng.Below(s->size() + 1), ins);
      break;
    }
    default:  // duplicate a run
      if (!s->empty()) {
        size_t at = rng.Below(s->size());
        size_t n = 1 + rng.Below(std::min<size_t>(64, s->size() - at));
        s->insert(rng.Below(s->size() + 1), s->substr(at, n));
      }
      break;
  }
}

// The input running, saved by the crash handler so a failure can be replayed.
const std::string* g_current = nullptr;
char g_crash_path[4096];

void OnCrash(int sig) {
  if (g_current != nullptr) {
    int fd = open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ssize_t ignored = write(fd, g_current->data(), g_current->size());
      (void)ignored;
      close(fd);
      static const char kMsg[] = "\n==> the input that failed is saved as ";
      ignored = write(2, kMsg, sizeof kMsg - 1);
      ignored = write(2, g_crash_path, strlen(g_crash_path));
      ignored = write(2, "\n", 1);
    }
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

int Run(const std::string& data) {
  g_current = &data;
  int r = LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  g_current = nullptr;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  uint64_t mutations = 2000, seed = 1;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--mutations=", 0) == 0) {
      mutations = std::strtoull(a.c_str() + 12, nullptr, 10);
    } else if (a.rfind("--seed=", 0) == 0) {
      seed = std::strtoull(a.c_str() + 7, nullptr, 10);
    } else if (a.rfind("--optional=", 0) == 0) {  // an input used if it exists
      if (std::filesystem::is_regular_file(a.substr(11))) files.push_back(a.substr(11));
    } else if (std::filesystem::is_directory(a)) {
      for (const auto& e : std::filesystem::directory_iterator(a)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
    } else {
      files.push_back(a);
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> inputs;
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot read %s\n", argv[0], f.c_str());
      return 2;
    }
    inputs.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "%s: no inputs (name the seed corpus directory)\n", argv[0]);
    return 2;
  }
  // Where a failing input goes: the working directory (ctest: the build's
  // fuzz/ directory), named after the target.
  std::string base = argv[0];
  base = base.substr(base.rfind('/') + 1);
  std::snprintf(g_crash_path, sizeof g_crash_path, "%s-crash", base.c_str());
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) signal(sig, OnCrash);
  auto start = std::chrono::steady_clock::now();
  for (const std::string& in : inputs) Run(in);
  Rng rng{seed * 0x9E3779B97F4A7C15ULL | 1};
  for (uint64_t i = 0; i < mutations; ++i) {
    std::string s = inputs[rng.Below(inputs.size())];
    for (size_t k = 1 + rng.Below(4); k > 0; --k) Mutate(&s, rng);
    Run(s);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %zu inputs and %llu mutations of them ran in %.1f s\n", argv[0], inputs.size(),
              static_cast<unsigned long long>(mutations), secs);
  return 0;
}
