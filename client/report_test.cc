#include "client/report.h"

#include <gtest/gtest.h>

#include "client/forwarder.h"
#include "proto/stack_id.h"
#include "tests/testing/test_util.h"

namespace cgoheap::client {
namespace {

v1::LeaksResponse Sample() {
  v1::LeaksResponse r;
  r.set_processes(1);
  r.set_hidden(2);
  r.set_hidden_bytes(1280);
  v1::Leak* l = r.add_leaks();
  l->set_kind("exit");
  l->set_bytes(17);
  l->set_blocks(1);
  l->set_processes(1);
  l->set_user_frame(2);
  auto add = [&](const char* fn, const char* file, int line) {
    v1::Frame* f = l->mutable_stack()->add_frames();
    f->set_function(fn);
    f->set_file(file);
    f->set_line(line);
  };
  add("malloc", "", 0);
  add("main._Cfunc_CString", "_cgo_gotypes.go", 55);
  add("main.main", "/src/demo/main.go", 12);
  return r;
}

TEST(ReportTest, TextReadsLikeValgrind) {
  EXPECT_EQ(LeaksText(Sample(), {"==7==", false}),
            "==7== 17 bytes in 1 block never freed (1 of 1 leak)\n"
            "==7==    at malloc\n"
            "==7==    by main._Cfunc_CString  (_cgo_gotypes.go:55)\n"
            "==7==    by main.main            (/src/demo/main.go:12)   <- your code\n"
            "==7==\n"
            "==7== LEAK SUMMARY: 17 bytes in 1 block never freed, from 1 stack\n"
            "==7== (1,280 bytes in 2 stacks allocated for the Go runtime and the C library "
            "itself are hidden; --all shows them)\n");
  v1::LeaksResponse more = Sample();
  more.set_omitted(2);
  more.set_omitted_bytes(4096);
  EXPECT_NE(LeaksText(more, {"==7==", false})
                .find("==7== (2 more leaks with 4,096 bytes not shown: the largest come first; "
                      "--limit=N shows more)\n"),
            std::string::npos);
  v1::LeaksResponse none;
  none.set_processes(1);
  none.set_dropped_events(3);
  EXPECT_EQ(LeaksText(none, {"==", false}),
            "== LEAK SUMMARY: no leaks\n"
            "== WARNING: 3 events were dropped because the forwarder fell behind: this report is "
            "incomplete (CGOHEAP_RING_MB=N gives each thread N MiB of ring, 2 by default)\n");
  v1::LeaksResponse cut;
  cut.set_processes(2);
  cut.set_unwind_failures(1);
  cut.set_go_crossing_unknown(1);
  EXPECT_EQ(LeaksText(cut, {"==", false}),
            "== LEAK SUMMARY: no leaks across 2 processes\n"
            "== WARNING: 1 process built by a Go release whose cgo calls this cgoheap does not "
            "understand: their stacks stop where C was called from Go (a newer cgoheap may know "
            "it)\n"
            "== WARNING: 1 allocation had stacks cut short (the Go frames above a cgo call, or the "
            "callers of C code without unwind information, could not be recovered): their leaks "
            "are still shown, and marked incomplete where their Go frames are missing\n");
}

// A response of one leak of 8 bytes in 1 block that exits, of one process;
// add(function, file, line, inlined) gives its stack a frame.
struct OneLeak {
  explicit OneLeak(int user_frame) : leak(r.add_leaks()) {
    r.set_processes(1);
    leak->set_kind("exit");
    leak->set_bytes(8);
    leak->set_blocks(1);
    leak->set_processes(1);
    leak->set_user_frame(user_frame);
  }
  void add(const std::string& fn, const char* file, int line, bool inlined = false) {
    v1::Frame* f = leak->mutable_stack()->add_frames();
    f->set_function(fn);
    f->set_file(file);
    f->set_line(line);
    f->set_inlined(inlined);
  }
  v1::LeaksResponse r;
  v1::Leak* leak;
};

// A function inlined into its caller shares the caller's call site: marked
// as pprof marks it, after its own file:line.
TEST(ReportTest, InlinedFramesAreMarked) {
  OneLeak one(3);
  one.add("malloc", "", 0);
  one.add("f1", "main.go", 9, true);
  one.add("_cgo_5a_Cfunc_f1", "cgo-gcc-prolog", 49);
  one.add("main.main", "main.go", 22);
  EXPECT_EQ(LeaksText(one.r, {"==", false}),
            "== 8 bytes in 1 block never freed (1 of 1 leak)\n"
            "==    at malloc\n"
            "==    by f1                (main.go:9) (inline)\n"
            "==    by _cgo_5a_Cfunc_f1  (cgo-gcc-prolog:49)\n"
            "==    by main.main         (main.go:22)   <- your code\n"
            "==\n"
            "== LEAK SUMMARY: 8 bytes in 1 block never freed, from 1 stack\n");
}

// A C++ name of hundreds of characters does not push every frame's
// location out to its end.
TEST(ReportTest, ALongNameDoesNotWidenTheColumn) {
  OneLeak one(2);
  const std::string long_name = "duckdb::ExtensionHelper::LoadExtension(duckdb::DuckDB&, " +
                                std::string(60, 'x') + ")";
  one.add("malloc", "", 0);
  one.add(long_name, "extension_helper.cpp", 120);
  one.add("main.main", "main.go", 22);
  EXPECT_EQ(LeaksText(one.r, {"==", false}),
            "== 8 bytes in 1 block never freed (1 of 1 leak)\n"
            "==    at malloc\n"
            "==    by " + long_name + "  (extension_helper.cpp:120)\n"
            "==    by main.main  (main.go:22)   <- your code\n"
            "==\n"
            "== LEAK SUMMARY: 8 bytes in 1 block never freed, from 1 stack\n");
}

TEST(ReportTest, AForeignAllocatorIsSaidInLeaksAndPs) {
  v1::LeaksResponse r;
  r.set_processes(1);
  r.set_foreign_allocator(1);
  r.add_foreign_allocator_functions("malloc");
  r.add_foreign_allocator_functions("free");
  EXPECT_EQ(LeaksText(r, {"==", false}),
            "== LEAK SUMMARY: no leaks\n"
            "== WARNING: 1 process allocates through functions cgoheap's agent does not see "
            "(malloc, free: defined by the program itself, as a statically linked jemalloc, "
            "tcmalloc, mimalloc or sanitizer runtime is, or by a library preloaded before the "
            "agent): what is "
            "allocated through them never reaches cgoheap, and its leaks cannot be shown\n");
  google::protobuf::Value v = testing::ParseJson(LeaksJson(r));
  EXPECT_EQ(v.struct_value().fields().at("foreign_allocator").number_value(), 1);
  EXPECT_EQ(v.struct_value()
                .fields()
                .at("foreign_allocator_functions")
                .list_value()
                .values(1)
                .string_value(),
            "free");

  v1::ListProcessesResponse list;
  v1::ProcessInfo* p = list.add_processes();
  p->set_process_id("00000000000000aa");
  p->mutable_hello()->set_pid(42);
  p->mutable_hello()->add_foreign_allocator("malloc");
  p->mutable_hello()->add_foreign_allocator("free");
  EXPECT_NE(ProcessesText(list).find("WARNING: process 00000000000000aa (pid 42): its malloc, "
                                     "free never reach cgoheap's agent"),
            std::string::npos)
      << ProcessesText(list);
  google::protobuf::Value j = testing::ParseJson(ProcessesJson(list));
  EXPECT_EQ(j.struct_value()
                .fields()
                .at("processes")
                .list_value()
                .values(0)
                .struct_value()
                .fields()
                .at("foreign_allocator")
                .list_value()
                .values_size(),
            2);
}

// A process scanned at exit: each leak says what of it was still pointed
// to, the summary what was lost; what --lost left out, and processes that
// could not be scanned, are said.
TEST(ReportTest, WhatTheExitScanFoundIsSaid) {
  v1::LeaksResponse r = Sample();
  r.set_hidden(0);
  r.set_scanned(1);
  r.mutable_leaks(0)->set_scanned_processes(1);
  v1::Leak* cache = r.add_leaks();
  *cache = r.leaks(0);
  cache->set_bytes(48);
  cache->set_blocks(3);
  cache->set_reachable_bytes(48);
  cache->set_reachable_blocks(3);
  v1::Leak* some = r.add_leaks();
  *some = r.leaks(0);
  some->set_bytes(40);
  some->set_blocks(4);
  some->set_reachable_bytes(10);
  some->set_reachable_blocks(1);
  some->set_indirect_bytes(20);
  some->set_indirect_blocks(2);
  const std::string text = LeaksText(r, {"==7==", false});
  EXPECT_NE(text.find("==7== 17 bytes in 1 block never freed (1 of 3 leaks)\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("==7== 48 bytes in 3 blocks never freed (2 of 3 leaks) [still reachable at exit]\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("==7== 40 bytes in 4 blocks never freed (3 of 3 leaks) [still reachable at "
                      "exit: 10 bytes in 1 block] [indirectly lost: 20 bytes in 2 blocks]\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("==7== (scanned at exit: definitely lost 27 bytes in 2 blocks, nothing "
                      "pointed to them; indirectly lost 20 bytes in 2 blocks, only lost blocks "
                      "pointed to them; still reachable 58 bytes in 4 blocks, pointed to by "
                      "globals, thread-local storage or other reachable blocks; --lost shows only "
                      "what was lost)\n"),
            std::string::npos)
      << text;

  v1::LeaksResponse lost = Sample();
  lost.set_hidden(0);
  lost.set_scanned(1);
  lost.mutable_leaks(0)->set_scanned_processes(1);
  lost.set_reachable_hidden(2);
  lost.set_reachable_hidden_bytes(88);
  lost.set_reachable_hidden_blocks(7);
  EXPECT_EQ(LeaksText(lost, {"==", false}).substr(LeaksText(lost, {"==", false}).find("== LEAK")),
            "== LEAK SUMMARY: 17 bytes in 1 block never freed, from 1 stack\n"
            "== (scanned at exit: definitely lost 17 bytes in 1 block, nothing pointed to them)\n"
            "== (88 bytes in 7 blocks from 2 stacks never freed but still pointed to at exit are "
            "not shown (--lost): valgrind's \"still reachable\")\n");

  v1::LeaksResponse kept = Sample();
  kept.set_hidden(0);
  kept.set_scanned(1);
  kept.mutable_leaks(0)->set_scanned_processes(1);
  kept.mutable_leaks(0)->set_reachable_bytes(17);
  kept.mutable_leaks(0)->set_reachable_blocks(1);
  EXPECT_NE(LeaksText(kept, {"==", false})
                .find("== (scanned at exit: nothing lost; still reachable 17 bytes in 1 block, "
                      "pointed to by globals, thread-local storage or other reachable blocks; "
                      "--lost shows only what was lost)\n"),
            std::string::npos)
      << LeaksText(kept, {"==", false});

  v1::LeaksResponse unscanned = Sample();
  unscanned.set_hidden(0);
  unscanned.set_not_scanned(1);
  unscanned.add_not_scanned_reasons("ptrace is not allowed here");
  EXPECT_NE(LeaksText(unscanned, {"==", false})
                .find("== (1 process was not scanned at exit, so nothing there is told still "
                      "reachable: ptrace is not allowed here)\n"),
            std::string::npos);

  google::protobuf::Value v = testing::ParseJson(LeaksJson(r));
  const auto& doc = v.struct_value().fields();
  EXPECT_EQ(doc.at("scanned").number_value(), 1);
  const auto& third = doc.at("leaks").list_value().values(2).struct_value().fields();
  EXPECT_EQ(third.at("reachable_bytes").number_value(), 10);
  EXPECT_EQ(third.at("reachable_blocks").number_value(), 1);
  EXPECT_EQ(third.at("scanned_processes").number_value(), 1);
  EXPECT_EQ(third.at("indirect_bytes").number_value(), 20);
  EXPECT_EQ(third.at("indirect_blocks").number_value(), 2);
  const google::protobuf::Value lost_doc = testing::ParseJson(LeaksJson(lost));
  const auto& l = lost_doc.struct_value().fields();
  EXPECT_EQ(l.at("reachable_hidden").number_value(), 2);
  EXPECT_EQ(l.at("reachable_hidden_bytes").number_value(), 88);
  EXPECT_EQ(l.at("reachable_hidden_blocks").number_value(), 7);
}

TEST(ReportTest, JsonHasTheDocumentedShape) {
  google::protobuf::Value v = testing::ParseJson(LeaksJson(Sample()));
  const auto& leak = v.struct_value().fields().at("leaks").list_value().values(0).struct_value();
  EXPECT_EQ(leak.fields().at("kind").string_value(), "exit");
  EXPECT_EQ(leak.fields().at("bytes").number_value(), 17);
  EXPECT_EQ(leak.fields().at("blocks").number_value(), 1);
  EXPECT_EQ(leak.fields().at("processes").number_value(), 1);
  const auto& frames = leak.fields().at("frames").list_value();
  ASSERT_EQ(frames.values_size(), 3);
  const auto& f = frames.values(2).struct_value().fields();
  EXPECT_EQ(f.at("function").string_value(), "main.main");
  EXPECT_EQ(f.at("file").string_value(), "/src/demo/main.go");
  EXPECT_EQ(f.at("line").number_value(), 12);
  EXPECT_EQ(JsonString("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
  EXPECT_EQ(Thousands(134217728), "134,217,728");
  EXPECT_EQ(Thousands(999), "999");
}

// Names, files and arguments come from other people's processes: nothing in
// them may act on the terminal, or make the JSON invalid.
TEST(ReportTest, StringsFromTargetsCannotReachTheTerminal) {
  v1::LeaksResponse r = Sample();
  v1::Frame* f = r.mutable_leaks(0)->mutable_stack()->mutable_frames(2);
  f->set_function("main.main\x1b]0;owned\x07");
  f->set_file("/src/caf\xe9/main.go\n==7== fake line");  // raw bytes, as stored by an older forwarder
  std::string text = LeaksText(r, {"==7==", false});
  EXPECT_NE(text.find("by main.main\\x1b]0;owned\\x07  (/src/caf\\xe9/main.go\\n==7== fake line:12)"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
  EXPECT_EQ(text.find("\n==7== fake"), std::string::npos);

  v1::ListProcessesResponse list;
  v1::ProcessInfo* p = list.add_processes();
  p->set_process_id("00000000000000aa");
  p->set_state("running");
  p->mutable_hello()->set_service("svc\xc2\x9b" "2J");  // a C1 CSI, valid UTF-8
  p->mutable_hello()->add_args("prog");
  p->mutable_hello()->add_args("evil\xe2\x80\xaetxt.exe");  // right-to-left override
  std::string ps = ProcessesText(list);
  EXPECT_NE(ps.find("svc\\u009b2J"), std::string::npos) << ps;
  EXPECT_NE(ps.find("prog evil\\u202etxt.exe"), std::string::npos) << ps;

  google::protobuf::Value v = testing::ParseJson(ProcessesJson(list));
  const auto& proc = v.struct_value().fields().at("processes").list_value().values(0).struct_value();
  EXPECT_EQ(proc.fields().at("service").string_value(), "svc\xc2\x9b" "2J");
  EXPECT_EQ(JsonString("caf\xe9"), "\"caf\\\\xe9\"");  // invalid UTF-8 as the text \xe9
  EXPECT_EQ(JsonString("\x7f\xe2\x80\xae"), "\"\\u007f\\u202e\"");
  EXPECT_EQ(JsonString("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
}

// The server refuses a stack of more than kMaxFramesPerStack frames (and with
// it the whole batch): the forwarder never sends one, and keeps both ends.
TEST(ReportTest, StacksLongerThanTheServerTakesKeepBothEnds) {
  v1::Stack s;
  for (int i = 0; i < 1000; ++i) s.add_frames()->set_function("f" + std::to_string(i));
  CapStack(&s);
  ASSERT_EQ(s.frames_size(), kMaxFramesPerStack);
  EXPECT_EQ(s.frames(0).function(), "f0");  // the allocator
  EXPECT_EQ(s.frames(190).function(), "f190");
  EXPECT_EQ(s.frames(191).function(), "[745 frames left out: cgoheap keeps 256 per stack]");
  EXPECT_EQ(s.frames(192).function(), "f936");
  EXPECT_EQ(s.frames(255).function(), "f999");  // the program's entry
  v1::Stack exact;
  for (int i = 0; i < kMaxFramesPerStack; ++i) exact.add_frames()->set_function("g");
  CapStack(&exact);
  EXPECT_EQ(exact.frames_size(), kMaxFramesPerStack);
  EXPECT_EQ(exact.frames(kMaxFramesPerStack - 1).function(), "g");
}

TEST(ReportTest, StackIdDependsOnSymbolsNotAddresses) {
  v1::Stack a = Sample().leaks(0).stack();
  v1::Stack b = a;
  for (auto& f : *b.mutable_frames()) f.set_pc(f.pc() + 0x1000);  // another build, same code
  b.mutable_frames(0)->set_object("/other/path");
  EXPECT_EQ(StackIdOf(a), StackIdOf(b));
  b.mutable_frames(2)->set_line(13);
  EXPECT_NE(StackIdOf(a), StackIdOf(b));
  v1::Stack c = a;  // moving text between fields changes the id
  c.mutable_frames(1)->set_function("main._Cfunc_CStrin");
  c.mutable_frames(1)->set_file("g_cgo_gotypes.go");
  EXPECT_NE(StackIdOf(a), StackIdOf(c));
}

}  // namespace
}  // namespace cgoheap::client
