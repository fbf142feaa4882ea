// Go function names as .gopclntab and Go's tools write them.
//
//   GoPackageOf("net/http.(*conn).serve")        -> "net/http"
//   GoPackageOf("example.com/app/db.Get[...]")   -> "example.com/app/db"
#pragma once

#include <string_view>

namespace cgoheap {

// The package path of a Go function: up to the first '.' after the last '/'
// (before any type arguments, whose names may contain both). Empty when the
// name has no package.
inline std::string_view GoPackageOf(std::string_view function) {
  function = function.substr(0, function.find('['));
  size_t slash = function.rfind('/');
  size_t dot = function.find('.', slash == std::string_view::npos ? 0 : slash);
  return dot == std::string_view::npos ? std::string_view() : function.substr(0, dot);
}

}  // namespace cgoheap
