// cast: argument object -> core struct (the cast room). Both buffers' byte
// lengths are checked against the element count before a pointer is taken.
#include <string>

#include "../core/cast/cast.h"
#include "job.h"

namespace st {
namespace addon {

namespace {

class CastJob : public Job {
 public:
  CastJob(Napi::Env env, const Napi::Object& o) {
    a_.from = get_float_dtype(o, "srcDtype");
    a_.to = get_float_dtype(o, "dstDtype");
    a_.n = get_int(o, "n");
    const int64_t k = get_int(o, "kernel");
    if (k < 0 || k > 4) throw_error(env, Code::Value, "unknown kernel code");
    a_.kernel = static_cast<Kernel>(k);
    a_.threads = static_cast<int>(get_int(o, "threads"));
    if (a_.n < 0) throw_error(env, Code::Shape, "negative element count");
    const uint64_t n = static_cast<uint64_t>(a_.n);
    a_.src = pin(env, o.Get("src"), "input", checked_mul(env, n, dtype_size(a_.from), "input"));
    // Written entirely (in place between 16-bit types: the same memory as src,
    // which copy mode reads from its own copy of the input).
    a_.dst = pin_output(env, o.Get("dst"), "output", checked_mul(env, n, dtype_size(a_.to), "output"));
  }
  Status run() override { return cast(a_); }

 private:
  CastArgs a_;
};

}  // namespace

void register_cast(Napi::Env env, Napi::Object exports) {
  exports.Set("cast", Napi::Function::New(env, run_job<CastJob>, "cast"));
}

}  // namespace addon
}  // namespace st
