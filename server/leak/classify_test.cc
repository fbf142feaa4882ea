#include "server/leak/classify.h"

#include <gtest/gtest.h>

namespace cgoheap::server {
namespace {

v1::Stack Make(std::initializer_list<std::tuple<const char*, const char*, bool>> frames) {
  v1::Stack s;
  for (auto [fn, file, go] : frames) {
    v1::Frame* f = s.add_frames();
    f->set_function(fn);
    f->set_file(file);
    f->set_go(go);
    f->set_object(go ? "/app/bin" : (file[0] ? "/app/bin" : "/usr/lib/x86_64-linux-gnu/libc.so.6"));
  }
  return s;
}

TEST(ClassifyTest, CStringLeakIsTheUsersAndMarksMainMain) {
  v1::Stack s = Make({{"malloc", "", false},
                      {"_cgo_abc_Cfunc__Cmalloc", "/tmp/go-build/_cgo_export.c", false},
                      {"runtime.asmcgocall", "asm_amd64.s", true},
                      {"runtime.cgocall", "cgocall.go", true},
                      {"main._cgo_cmalloc", "_cgo_gotypes.go", true},
                      {"main._Cfunc_CString", "_cgo_gotypes.go", true},
                      {"main.main", "/src/main.go", true},
                      {"runtime.main", "proc.go", true}});
  StackClass c = ClassifyStack(s);
  EXPECT_FALSE(c.internal);
  EXPECT_EQ(c.user_frame, 6);
}

TEST(ClassifyTest, ThreadCreationByTheRuntimeIsInternal) {
  v1::Stack s = Make({{"malloc", "", false},
                      {"x_cgo_thread_start", "/_/runtime/cgo/gcc_util.c", false},
                      {"runtime.asmcgocall", "asm_amd64.s", true},
                      {"runtime.newm1", "proc.go", true},
                      {"runtime.main", "proc.go", true}});
  StackClass c = ClassifyStack(s);
  EXPECT_TRUE(c.internal);
  EXPECT_EQ(c.reason, "Go runtime (runtime.newm1)");
  EXPECT_EQ(c.user_frame, -1);
}

TEST(ClassifyTest, SystemStackCgoCallIsInternal) {
  v1::Stack s = Make({{"calloc", "", false},
                      {"_dl_allocate_tls", "", false},
                      {"runtime.asmcgocall", "asm_amd64.s", true}});
  StackClass c = ClassifyStack(s);
  EXPECT_TRUE(c.internal);
  EXPECT_EQ(c.reason, "C library: thread-local storage (_dl_allocate_tls)");
}

// A missing Go part is no evidence of anything: the user's leak whose Go
// frames could not be recovered is shown, marked incomplete.
TEST(ClassifyTest, StackCutShortAtTheCrossingIsTheUsersAndIncomplete) {
  v1::Stack s = Make({{"malloc", "", false},
                      {"f1", "/src/main.go", false},
                      {"_cgo_abc_Cfunc_f1", "/tmp/go-build/cgo-gcc-prolog", false},
                      {"runtime.asmcgocall", "asm_amd64.s", true}});
  StackClass c = ClassifyStack(s);
  EXPECT_FALSE(c.internal) << c.reason;
  EXPECT_EQ(c.incomplete, "the Go frames above the cgo call could not be recovered");
  EXPECT_EQ(c.user_frame, 1);
}

// With the forwarder's marks, only the main module's frames are the user's:
// a dependency's cgo wrapper with a source file is not.
TEST(ClassifyTest, OwnFramesDecideWhenTheForwarderMarkedThem) {
  v1::Stack s = Make({{"malloc", "", false},
                      {"_sqlite3_open_v2", "/gocode/src/github.com/mattn/go-sqlite3/sqlite3.go", false},
                      {"runtime.asmcgocall", "asm_amd64.s", true},
                      {"runtime.cgocall", "cgocall.go", true},
                      {"github.com/mattn/go-sqlite3.(*SQLiteDriver).Open", "/gocode/sqlite3.go", true},
                      {"main.main", "/src/main.go", true},
                      {"main.run", "/src/main.go", true}});
  s.set_own_basis("main module example.com/app (the executable's build info)");
  s.mutable_frames(5)->set_own(true);
  s.mutable_frames(6)->set_own(true);
  StackClass c = ClassifyStack(s);
  EXPECT_EQ(c.user_frame, 5);
  EXPECT_EQ(c.user_frames, (std::vector<int>{5, 6}));
  EXPECT_EQ(c.user_code, s.own_basis());
}

TEST(ClassifyTest, StdioBufferIsInternalButALeakInUserCThreadIsNot) {
  v1::Stack stdio = Make({{"malloc", "", false},
                          {"_IO_file_doallocate", "", false},
                          {"_IO_puts", "", false},
                          {"runtime.asmcgocall", "asm_amd64.s", true},
                          {"main._Cfunc_myprint", "_cgo_gotypes.go", true},
                          {"main.main", "/src/main.go", true}});
  EXPECT_TRUE(ClassifyStack(stdio).internal);
  v1::Stack thread = Make({{"malloc", "", false},
                           {"f1", "/src/main.go", false},
                           {"start_thread", "", false},
                           {"__clone3", "", false}});
  StackClass c = ClassifyStack(thread);
  EXPECT_FALSE(c.internal);
  EXPECT_EQ(c.user_frame, 1);
}

TEST(ClassifyTest, StandardLibraryPackagesAreNotUserCode) {
  EXPECT_TRUE(IsGoStdlibFunction("runtime.main"));
  EXPECT_TRUE(IsGoStdlibFunction("net/http.(*conn).serve"));
  EXPECT_TRUE(IsGoStdlibFunction("database/sql.(*DB).conn"));
  EXPECT_FALSE(IsGoStdlibFunction("main.main"));
  EXPECT_FALSE(IsGoStdlibFunction("github.com/mattn/go-sqlite3.(*SQLiteConn).exec"));
  EXPECT_FALSE(IsGoStdlibFunction("example.com/x.F"));
}

}  // namespace
}  // namespace cgoheap::server
