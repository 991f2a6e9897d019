/*
 * nar-tvm-runner: measure the latency of a Relax VM library exported by
 * `tvm.compile(...).export_library(path)`, without a Python interpreter.
 *
 * Protocol (the same as nar_tvm.measure with the in-process evaluator):
 *   1. `--warmup` calls of the function;
 *   2. TVM's time evaluator loop, i.e. `time_evaluator(number, repeat, min_repeat_ms)`:
 *      one discarded call, then `repeat` timings; each timing runs the function `number`
 *      times and, while it lasts less than `--min-repeat-ms`, grows `number` to
 *      max(min_repeat_ms / per_call_ms + 1, number * 1.618) and runs again.
 *      `number` carries over from one repeat to the next, as in TVM.
 * Each repeat reports its duration divided by its `number`; the output is one JSON object
 * on stdout: {"median_ms", "repeats_ms", "cv", "number", ..., "runner": "native"}.
 *
 * Exit codes: 0 ok, 2 bad command line (unknown flag, bad --input spec, missing library
 * file), 1 failure while loading or running the library.
 */
#include <sched.h>
#include <signal.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#ifndef NAR_TVM_RUNNER_VERSION
#define NAR_TVM_RUNNER_VERSION "0.1.0"
#endif

namespace ffi = tvm::ffi;

namespace {

constexpr int kUsageError = 2;
constexpr int kRunError = 1;

struct UsageError : std::exception {
  std::string msg;
  explicit UsageError(std::string m) : msg(std::move(m)) {}
  const char* what() const noexcept override { return msg.c_str(); }
};

struct InputSpec {
  std::string text;  // as given, for the JSON echo
  DLDataType dtype;
  std::vector<int64_t> shape;
};

struct Options {
  std::string lib;
  std::string func = "main";
  std::vector<InputSpec> inputs;
  int warmup = 1;
  int repeat = 5;
  int min_repeat_ms = 40;
  int number = 1;
  int limit_zero_time_iterations = 100;
  int threads = 1;
  std::vector<int> cpu_affinity;
  uint64_t seed = 0;
  bool die_with_parent = false;
};

const char* kUsage =
    "usage: nar-tvm-runner --lib PATH [--input DTYPE:D0,D1,... ...] [options]\n"
    "\n"
    "Measure a Relax VM library exported by tvm.compile(...).export_library(PATH).\n"
    "\n"
    "  --lib PATH              the exported library (.so)\n"
    "  --input DTYPE:SHAPE     one per parameter of the function, in order, e.g.\n"
    "                          float32:1,3,224,224 (a scalar: float32:); filled with\n"
    "                          random data (normal for floats, 0/1 for integers)\n"
    "  --func NAME             VM function to time (default main)\n"
    "  --warmup N              untimed calls first (default 1)\n"
    "  --repeat N              timed repeats (default 5)\n"
    "  --min-repeat-ms MS      a repeat lasts at least this long (default 40)\n"
    "  --number N              initial calls per repeat (default 1)\n"
    "  --threads N             TVM_NUM_THREADS for the runtime's pool (default 1)\n"
    "  --cpu-affinity LIST     pin to these cores, e.g. 0 or 0,2-3 (default: no pinning)\n"
    "  --seed N                seed of the random input data (default 0)\n"
    "  --die-with-parent       exit when the calling process dies (Linux; used by\n"
    "                          nar_tvm.native so a killed profiler leaves no runner behind)\n"
    "  --version               print the runner's version and exit\n"
    "\n"
    "Prints one JSON object: median_ms, repeats_ms, cv, number, ... runner=\"native\".\n";

int ParseInt(const std::string& flag, const std::string& s, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) {
    std::ostringstream os;
    os << flag << ": expected an integer in [" << lo << ", " << hi << "], got '" << s << "'";
    throw UsageError(os.str());
  }
  return static_cast<int>(v);
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  std::istringstream is(s);
  while (std::getline(is, cur, sep)) parts.push_back(cur);
  if (!s.empty() && s.back() == sep) parts.push_back("");
  return parts;
}

bool SupportedDType(DLDataType t) {
  if (t.lanes != 1) return false;
  switch (t.code) {
    case kDLFloat:
      return t.bits == 16 || t.bits == 32 || t.bits == 64;
    case kDLInt:
    case kDLUInt:
      return t.bits == 8 || t.bits == 16 || t.bits == 32 || t.bits == 64;
    case kDLBool:
      return t.bits == 8;
    default:
      return false;
  }
}

InputSpec ParseInput(const std::string& text) {
  auto colon = text.find(':');
  if (colon == std::string::npos || colon == 0) {
    throw UsageError("--input '" + text + "': expected DTYPE:D0,D1,... e.g. float32:1,3,32,32");
  }
  InputSpec spec;
  spec.text = text;
  std::string dtype = text.substr(0, colon);
  try {
    spec.dtype = ffi::StringToDLDataType(dtype);
  } catch (const std::exception&) {
    throw UsageError("--input '" + text + "': unknown dtype '" + dtype + "'");
  }
  if (!SupportedDType(spec.dtype)) {
    throw UsageError("--input '" + text + "': unsupported dtype '" + dtype +
                     "' (use float16/32/64, int8..64, uint8..64 or bool)");
  }
  std::string dims = text.substr(colon + 1);
  if (!dims.empty()) {
    for (const std::string& d : Split(dims, ',')) {
      char* end = nullptr;
      errno = 0;
      long long v = std::strtoll(d.c_str(), &end, 10);
      if (d.empty() || *end != '\0' || errno != 0 || v < 0) {
        throw UsageError("--input '" + text + "': bad dimension '" + d +
                         "' (dimensions are non-negative integers separated by commas)");
      }
      spec.shape.push_back(v);
    }
  }
  return spec;
}

std::vector<int> ParseCpuList(const std::string& s) {
  std::vector<int> cpus;
  for (const std::string& part : Split(s, ',')) {
    auto dash = part.find('-');
    if (dash == std::string::npos) {
      cpus.push_back(ParseInt("--cpu-affinity", part, 0, CPU_SETSIZE - 1));
    } else {
      int a = ParseInt("--cpu-affinity", part.substr(0, dash), 0, CPU_SETSIZE - 1);
      int b = ParseInt("--cpu-affinity", part.substr(dash + 1), 0, CPU_SETSIZE - 1);
      if (b < a) throw UsageError("--cpu-affinity: bad range '" + part + "'");
      for (int c = a; c <= b; ++c) cpus.push_back(c);
    }
  }
  if (cpus.empty()) throw UsageError("--cpu-affinity: empty core list");
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

Options ParseArgs(int argc, char** argv) {
  Options opt;
  bool have_lib = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    auto eq = flag.find('=');
    bool inline_value = flag.rfind("--", 0) == 0 && eq != std::string::npos;
    if (inline_value) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag == "--version") {
      std::printf("nar-tvm-runner %s\n", NAR_TVM_RUNNER_VERSION);
      std::exit(0);
    }
    auto next = [&]() -> std::string {
      if (inline_value) return value;
      if (i + 1 >= argc) throw UsageError(flag + ": missing value");
      return argv[++i];
    };
    if (flag == "--lib") {
      opt.lib = next();
      have_lib = true;
    } else if (flag == "--input") {
      opt.inputs.push_back(ParseInput(next()));
    } else if (flag == "--func") {
      opt.func = next();
    } else if (flag == "--warmup") {
      opt.warmup = ParseInt(flag, next(), 0, 1000000);
    } else if (flag == "--repeat") {
      opt.repeat = ParseInt(flag, next(), 1, 1000000);
    } else if (flag == "--min-repeat-ms") {
      opt.min_repeat_ms = ParseInt(flag, next(), 0, 3600000);
    } else if (flag == "--number") {
      opt.number = ParseInt(flag, next(), 1, 1000000000);
    } else if (flag == "--limit-zero-time-iterations") {
      opt.limit_zero_time_iterations = ParseInt(flag, next(), 1, 1000000);
    } else if (flag == "--threads") {
      opt.threads = ParseInt(flag, next(), 1, 4096);
    } else if (flag == "--cpu-affinity") {
      opt.cpu_affinity = ParseCpuList(next());
    } else if (flag == "--die-with-parent") {
      opt.die_with_parent = true;
    } else if (flag == "--seed") {
      opt.seed = static_cast<uint64_t>(ParseInt(flag, next(), 0, 2147483647));
    } else {
      throw UsageError("unknown argument '" + std::string(argv[i]) + "' (see --help)");
    }
  }
  if (!have_lib || opt.lib.empty()) throw UsageError("--lib PATH is required (see --help)");
  struct stat st;
  if (::stat(opt.lib.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw UsageError("--lib '" + opt.lib + "': no such file");
  }
  // dlopen searches the library path for a bare name; make it a path.
  if (opt.lib.find('/') == std::string::npos) opt.lib = "./" + opt.lib;
  return opt;
}

// CPU tensors owned by the runner (FromNDAlloc calls AllocData / FreeData).
struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t bytes = std::max<size_t>(ffi::GetDataSize(*t), 1);
    void* p = nullptr;
    if (posix_memalign(&p, 64, bytes) != 0) throw std::bad_alloc();
    t->data = p;
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (exp <= 0) return static_cast<uint16_t>(sign);  // tiny values flush to zero
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7bffu);
  return static_cast<uint16_t>(sign | (exp << 10) | (mant >> 13));
}

void FillRandom(DLTensor* t, std::mt19937_64& rng) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; ++i) n *= t->shape[i];
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_int_distribution<int> bit(0, 1);
  const DLDataType dt = t->dtype;
  for (int64_t i = 0; i < n; ++i) {
    if (dt.code == kDLFloat) {
      double v = normal(rng);
      if (dt.bits == 32) static_cast<float*>(t->data)[i] = static_cast<float>(v);
      else if (dt.bits == 64) static_cast<double*>(t->data)[i] = v;
      else static_cast<uint16_t*>(t->data)[i] = FloatToHalf(static_cast<float>(v));
    } else {
      int v = bit(rng);
      switch (dt.bits) {
        case 8: static_cast<uint8_t*>(t->data)[i] = static_cast<uint8_t>(v); break;
        case 16: static_cast<uint16_t*>(t->data)[i] = static_cast<uint16_t>(v); break;
        case 32: static_cast<uint32_t*>(t->data)[i] = static_cast<uint32_t>(v); break;
        default: static_cast<uint64_t*>(t->data)[i] = static_cast<uint64_t>(v); break;
      }
    }
  }
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Population standard deviation over the mean, as statistics.pstdev / mean in Python.
double CoefficientOfVariation(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  double mean = 0.0;
  for (double x : v) mean += x;
  mean /= v.size();
  double var = 0.0;
  for (double x : v) var += (x - mean) * (x - mean);
  var /= v.size();
  return mean > 0 ? std::sqrt(var) / mean : 0.0;
}

int Run(const Options& opt) {
  using Clock = std::chrono::steady_clock;
  auto t_load = Clock::now();
  ffi::Module lib = ffi::Module::LoadFromFile(opt.lib);
  ffi::Optional<ffi::Function> load_exec = lib->GetFunction("vm_load_executable", true);
  if (!load_exec.has_value()) {
    std::fprintf(stderr,
                 "nar-tvm-runner: %s has no vm_load_executable: not a Relax VM library "
                 "(export it with tvm.compile(mod, target).export_library(path))\n",
                 opt.lib.c_str());
    return kRunError;
  }
  ffi::Module vm = (*load_exec)().cast<ffi::Module>();
  // One CPU device with the pooled allocator (2), as relax.VirtualMachine(ex, tvm.cpu()).
  ffi::Optional<ffi::Function> init = vm->GetFunction("vm_initialization");
  if (!init.has_value()) {
    std::fprintf(stderr, "nar-tvm-runner: the VM module has no vm_initialization\n");
    return kRunError;
  }
  (*init)(static_cast<int>(kDLCPU), 0, 2);
  ffi::Optional<ffi::Function> maybe_func = vm->GetFunction(opt.func);
  if (!maybe_func.has_value()) {
    std::fprintf(stderr, "nar-tvm-runner: %s has no VM function '%s'\n", opt.lib.c_str(),
                 opt.func.c_str());
    return kRunError;
  }
  ffi::Function func = *maybe_func;
  double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();

  std::mt19937_64 rng(opt.seed);
  std::vector<ffi::Tensor> tensors;
  DLDevice cpu{kDLCPU, 0};
  for (const InputSpec& in : opt.inputs) {
    ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::Shape(in.shape), in.dtype, cpu);
    FillRandom(const_cast<DLTensor*>(t.GetDLTensorPtr()), rng);
    tensors.push_back(t);
  }
  std::vector<ffi::AnyView> args(tensors.begin(), tensors.end());
  // As in TVM's time evaluator: one result slot for every call, so a call's output is
  // released when the next call returns (two outputs alive at a time, pooled allocator).
  ffi::Any rv;
  auto call = [&]() { func.CallPacked(args.data(), static_cast<int32_t>(args.size()), &rv); };

  for (int i = 0; i < opt.warmup; ++i) call();
  call();  // the time evaluator's discarded first call

  std::vector<double> repeats_ms;
  std::vector<int> numbers;
  int number = opt.number;
  for (int r = 0; r < opt.repeat; ++r) {
    double duration_ms = 0.0;
    int zero_times = 0;
    do {
      if (duration_ms > 0.0) {
        const double golden_ratio = 1.618;
        number = static_cast<int>(std::max(opt.min_repeat_ms / (duration_ms / number) + 1,
                                           number * golden_ratio));
      }
      auto t0 = Clock::now();
      for (int j = 0; j < number; ++j) call();
      auto t1 = Clock::now();
      int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
      if (ns == 0) ++zero_times;
      duration_ms = ns / 1e6;
    } while (duration_ms < opt.min_repeat_ms && zero_times < opt.limit_zero_time_iterations);
    repeats_ms.push_back(duration_ms / number);
    numbers.push_back(number);
  }

  double mean = 0.0;
  for (double x : repeats_ms) mean += x;
  mean /= repeats_ms.size();
  std::ostringstream os;
  os << "{\"median_ms\": " << JsonNumber(Median(repeats_ms)) << ", \"repeats_ms\": [";
  for (size_t i = 0; i < repeats_ms.size(); ++i) os << (i ? ", " : "") << JsonNumber(repeats_ms[i]);
  os << "], \"cv\": " << JsonNumber(CoefficientOfVariation(repeats_ms))
     << ", \"mean_ms\": " << JsonNumber(mean)
     << ", \"min_ms\": " << JsonNumber(*std::min_element(repeats_ms.begin(), repeats_ms.end()))
     << ", \"max_ms\": " << JsonNumber(*std::max_element(repeats_ms.begin(), repeats_ms.end()))
     << ", \"number\": " << number << ", \"numbers\": [";
  for (size_t i = 0; i < numbers.size(); ++i) os << (i ? ", " : "") << numbers[i];
  os << "], \"protocol\": {\"warmup\": " << opt.warmup << ", \"repeat\": " << opt.repeat
     << ", \"min_repeat_ms\": " << opt.min_repeat_ms << "}"
     << ", \"threads\": " << opt.threads << ", \"cpu_affinity\": ";
  if (opt.cpu_affinity.empty()) {
    os << "null";
  } else {
    os << "[";
    for (size_t i = 0; i < opt.cpu_affinity.size(); ++i) os << (i ? ", " : "") << opt.cpu_affinity[i];
    os << "]";
  }
  os << ", \"inputs\": [";
  for (size_t i = 0; i < opt.inputs.size(); ++i) os << (i ? ", " : "") << JsonString(opt.inputs[i].text);
  os << "], \"func\": " << JsonString(opt.func) << ", \"load_s\": " << JsonNumber(load_s)
     << ", \"runner\": \"native\", \"runner_version\": " << JsonString(NAR_TVM_RUNNER_VERSION) << "}";
  std::printf("%s\n", os.str().c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  try {
    opt = ParseArgs(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "nar-tvm-runner: error: %s\n", e.what());
    return kUsageError;
  }
  if (opt.die_with_parent) {
#if defined(__linux__)
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
  }
  // Before the runtime starts its thread pool (lazily, on the first parallel kernel):
  // the pool size comes from TVM_NUM_THREADS, and its threads inherit this affinity.
  setenv("TVM_NUM_THREADS", std::to_string(opt.threads).c_str(), 1);
  if (!opt.cpu_affinity.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : opt.cpu_affinity) CPU_SET(c, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
      std::fprintf(stderr, "nar-tvm-runner: error: --cpu-affinity: sched_setaffinity failed: %s\n",
                   std::strerror(errno));
      return kUsageError;
    }
  }
  try {
    return Run(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nar-tvm-runner: error: %s\n", e.what());
    return kRunError;
  }
}
