// Environment overrides the kernels read per call, so tests and users can switch them between calls.
#pragma once
#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

namespace rnnkern {

// Whether environment variable `name` is set to exactly `value` (the RNNKERN_RNN_* overrides;
// read per call, so tests and users can switch them between calls).
inline bool env_equals(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e != nullptr && std::strcmp(e, value) == 0;
}

// Environment variable `name` unset, empty or one of `allowed`; anything else is an error naming
// the variable and its values, so a mistyped override cannot silently fall back to the default.
inline void check_env_choice(const char* name, std::initializer_list<const char*> allowed) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return;
  std::string names;
  for (const char* a : allowed) {
    if (std::strcmp(e, a) == 0) return;
    names += names.empty() ? "'" : ", '";
    names += a;
    names += "'";
  }
  TORCH_CHECK(false, name, " must be one of ", names, " (or unset), got '", e, "'");
}

// A positive integer from environment variable `name`, or `fallback` when it is unset; any other
// value is an error naming the variable (read per call, as env_equals).
inline int env_positive_int(const char* name, int fallback) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return fallback;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  TORCH_CHECK(*end == '\0' && v > 0 && v <= (1L << 30), name, " must be a positive integer, got '", e, "'");
  return static_cast<int>(v);
}

// RNNKERN_DEBUG=1 (anything but 0): the kernels log the path each call takes (stderr): the RNN's
// path / step on both backends, the CPU convolutions' engine.
inline bool debug_log_enabled() {
  const char* e = std::getenv("RNNKERN_DEBUG");
  return e != nullptr && std::strcmp(e, "0") != 0;
}

}  // namespace rnnkern
