#include "common/sha256.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>

namespace cgoheap {
namespace {

// Without SHA-256 no stack has an id: nothing can go on. OpenSSL has it in
// every configuration (the FIPS provider too); only memory can run out.
[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "cgoheap: OpenSSL's SHA-256 failed (%s): out of memory?\n", what);
  std::abort();
}

const EVP_MD* Sha256Md() {
  // Fetched once (an implicit fetch at each init costs a lookup).
  static const EVP_MD* md = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched != nullptr ? fetched : EVP_sha256();
  }();
  return md;
}

}  // namespace

void Sha256::Prepare() { Sha256().Final(); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, Sha256Md(), nullptr) != 1) Fail("init");
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(std::string_view data) {
  if (EVP_DigestUpdate(ctx_, data.data(), data.size()) != 1) Fail("update");
}

std::array<uint8_t, 32> Sha256::Final() {
  std::array<uint8_t, 32> out;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_, out.data(), &len) != 1 || len != out.size()) Fail("final");
  return out;
}

}  // namespace cgoheap
