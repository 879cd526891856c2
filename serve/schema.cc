// The inference service's request and reply schemas; see serve/schema.h.
#include "serve/schema.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "route/speculative.h"

namespace tandem::serve {
namespace {

wire::Tensor Tokens(const std::string& name, const std::vector<int32_t>& tokens) {
  std::vector<uint32_t> u(tokens.begin(), tokens.end());
  return wire::Tensor::Uint32(name, {u.size()}, u);
}

void PutSampling(const SamplingOptions& s, uint64_t seed, wire::Params* params) {
  (*params)["temperature"] = static_cast<double>(s.temperature);
  (*params)["top_k"] = static_cast<int64_t>(s.top_k);
  (*params)["top_p"] = static_cast<double>(s.top_p);
  // Seeds travel as int64 (msgpack params are signed); the bits are the seed's.
  (*params)["seed"] = static_cast<int64_t>(seed);
}

// Reads the parameters and tensors of one request, each exactly once, and refuses extras.
class Reader {
 public:
  Reader(const wire::ServeRequest& r) : r_(r) {}

  StatusOr<int64_t> Int(const std::string& key, int64_t min, int64_t max) {
    TANDEM_ASSIGN_OR_RETURN(const wire::ParamValue* v, Find(key));
    const int64_t* i = std::get_if<int64_t>(v);
    if (i == nullptr) return Bad(key + ": expected an integer");
    if (*i < min || *i > max) {
      return Bad(key + ": " + std::to_string(*i) + " outside [" + std::to_string(min) + ", " +
                 std::to_string(max) + "]");
    }
    return *i;
  }
  StatusOr<double> Real(const std::string& key) {
    TANDEM_ASSIGN_OR_RETURN(const wire::ParamValue* v, Find(key));
    if (const double* d = std::get_if<double>(v)) return *d;
    if (const int64_t* i = std::get_if<int64_t>(v)) return static_cast<double>(*i);
    return Bad(key + ": expected a number");
  }
  StatusOr<const wire::Tensor*> Tensor(const std::string& name, wire::DType dtype, size_t rank) {
    const wire::Tensor* found = nullptr;
    for (const wire::Tensor& t : r_.tensors) {
      if (t.name != name) continue;
      if (found != nullptr) return Bad("tensor '" + name + "' given twice");
      found = &t;
    }
    if (found == nullptr) return Bad("missing tensor '" + name + "'");
    if (found->dtype != dtype) {
      return Bad("tensor '" + name + "': dtype " + std::string(wire::DTypeName(found->dtype)) +
                 ", expected " + std::string(wire::DTypeName(dtype)));
    }
    if (found->shape.size() != rank) {
      return Bad("tensor '" + name + "': rank " + std::to_string(found->shape.size()) +
                 ", expected " + std::to_string(rank));
    }
    tensors_read_.insert(name);
    return found;
  }
  StatusOr<SamplingOptions> Sampling() {
    SamplingOptions s;
    TANDEM_ASSIGN_OR_RETURN(const double t, Real("temperature"));
    TANDEM_ASSIGN_OR_RETURN(const int64_t k, Int("top_k", 0, 1 << 20));
    TANDEM_ASSIGN_OR_RETURN(const double p, Real("top_p"));
    s.temperature = static_cast<float>(t);
    s.top_k = static_cast<int>(k);
    s.top_p = static_cast<float>(p);
    if (Status v = s.Validate(); !v.ok()) return Bad(v.message());
    return s;
  }
  // Every parameter and tensor was read.
  Status Done() const {
    for (const auto& [key, value] : r_.params) {
      if (!params_read_.count(key)) return Bad("unknown parameter '" + key + "'");
    }
    for (const wire::Tensor& t : r_.tensors) {
      if (!tensors_read_.count(t.name)) return Bad("unknown tensor '" + t.name + "'");
    }
    return Status::Ok();
  }
  Status Bad(const std::string& what) const {
    return Status::InvalidArgument(r_.kind + ": " + what);
  }

 private:
  StatusOr<const wire::ParamValue*> Find(const std::string& key) {
    auto it = r_.params.find(key);
    if (it == r_.params.end()) return Bad("missing parameter '" + key + "'");
    params_read_.insert(key);
    return &it->second;
  }
  const wire::ServeRequest& r_;
  std::set<std::string> params_read_, tensors_read_;
};

StatusOr<std::vector<int32_t>> ReadTokens(Reader& reader, const std::string& name, int vocab,
                                          bool non_empty) {
  TANDEM_ASSIGN_OR_RETURN(const wire::Tensor* t, reader.Tensor(name, wire::DType::kUint32, 1));
  const std::vector<uint32_t> u = t->ToUint32();
  if (non_empty && u.empty()) return reader.Bad(name + ": empty");
  std::vector<int32_t> out;
  out.reserve(u.size());
  for (uint32_t v : u) {
    if (v >= static_cast<uint32_t>(vocab)) {
      return reader.Bad(name + ": token " + std::to_string(v) + " outside [0, " +
                        std::to_string(vocab) + ")");
    }
    out.push_back(static_cast<int32_t>(v));
  }
  return out;
}

}  // namespace

wire::ServeRequest EncodeRequest(const CompleteRequest& request, uint32_t deadline_ms) {
  wire::ServeRequest r;
  r.kind = kCompleteKind;
  r.deadline_ms = deadline_ms;
  r.params["max_tokens"] = static_cast<int64_t>(request.max_tokens);
  r.params["stop"] = static_cast<int64_t>(request.stop);
  PutSampling(request.sampling, request.seed, &r.params);
  r.tensors.push_back(Tokens("prompt", request.prompt));
  return r;
}

wire::ServeRequest EncodeRequest(const VerifyRequest& request, uint32_t deadline_ms) {
  wire::ServeRequest r;
  r.kind = kVerifyKind;
  r.deadline_ms = deadline_ms;
  PutSampling(request.sampling, request.seed, &r.params);
  r.tensors.push_back(Tokens("context", request.context));
  r.tensors.push_back(Tokens("draft", request.draft));
  const uint64_t gamma = request.draft.size();
  const uint64_t vocab = static_cast<uint64_t>(request.vocab);
  r.tensors.push_back(wire::Tensor::Float32("q", {gamma, vocab}, request.q));
  return r;
}

wire::ServeReply EncodeReply(const CompleteReply& reply) {
  wire::ServeReply r;
  r.tensors.push_back(Tokens("tokens", reply.tokens));
  return r;
}

wire::ServeReply EncodeReply(const VerifyReply& reply) {
  wire::ServeReply r;
  r.params["accepted"] = static_cast<int64_t>(reply.accepted);
  r.params["next"] = static_cast<int64_t>(reply.next);
  return r;
}

wire::ServeRequest EncodeInfoRequest() {
  wire::ServeRequest r;
  r.kind = kInfoKind;
  return r;
}

wire::ServeReply EncodeReply(const InfoReply& reply) {
  wire::ServeReply r;
  r.params["vocab"] = static_cast<int64_t>(reply.vocab);
  r.params["context"] = static_cast<int64_t>(reply.context);
  r.params["max_new_tokens"] = static_cast<int64_t>(reply.max_new_tokens);
  r.params["max_gamma"] = static_cast<int64_t>(reply.max_gamma);
  return r;
}

namespace {

StatusOr<int64_t> ReplyInt(const wire::ServeReply& reply, const char* key, const char* what) {
  auto it = reply.params.find(key);
  if (it == reply.params.end() || !std::holds_alternative<int64_t>(it->second)) {
    return Status::InvalidArgument(std::string(what) + ": missing integer '" + key + "'");
  }
  return std::get<int64_t>(it->second);
}

}  // namespace

StatusOr<InfoReply> DecodeInfoReply(const wire::ServeReply& reply) {
  InfoReply out;
  TANDEM_ASSIGN_OR_RETURN(const int64_t vocab, ReplyInt(reply, "vocab", "info reply"));
  TANDEM_ASSIGN_OR_RETURN(const int64_t context, ReplyInt(reply, "context", "info reply"));
  TANDEM_ASSIGN_OR_RETURN(const int64_t tokens, ReplyInt(reply, "max_new_tokens", "info reply"));
  TANDEM_ASSIGN_OR_RETURN(const int64_t gamma, ReplyInt(reply, "max_gamma", "info reply"));
  if (vocab < 1 || vocab > (1 << 24) || context < 1 || context > (1 << 24) || tokens < 1 ||
      gamma < 1) {
    return Status::InvalidArgument("info reply: a value out of range");
  }
  out.vocab = static_cast<int>(vocab);
  out.context = static_cast<int>(context);
  out.max_new_tokens = static_cast<int>(std::min<int64_t>(tokens, 1 << 24));
  out.max_gamma = static_cast<int>(std::min<int64_t>(gamma, 1 << 24));
  return out;
}

double ReplyMillis(const wire::ServeReply& reply, const char* key) {
  auto it = reply.params.find(key);
  if (it == reply.params.end()) return 0.0;
  if (const double* d = std::get_if<double>(&it->second)) return *d;
  return 0.0;
}

StatusOr<Request> DecodeRequest(const wire::ServeRequest& request, const RequestLimits& limits) {
  Reader reader(request);
  if (request.kind == kInfoKind) {
    TANDEM_RETURN_IF_ERROR(reader.Done());
    return Request(InfoRequest{});
  }
  if (request.kind == kCompleteKind) {
    CompleteRequest c;
    TANDEM_ASSIGN_OR_RETURN(const int64_t max_tokens,
                            reader.Int("max_tokens", 1, limits.max_new_tokens));
    TANDEM_ASSIGN_OR_RETURN(const int64_t stop, reader.Int("stop", -1, limits.vocab - 1));
    TANDEM_ASSIGN_OR_RETURN(c.sampling, reader.Sampling());
    TANDEM_ASSIGN_OR_RETURN(const int64_t seed, reader.Int("seed", INT64_MIN, INT64_MAX));
    TANDEM_ASSIGN_OR_RETURN(c.prompt, ReadTokens(reader, "prompt", limits.vocab, true));
    TANDEM_RETURN_IF_ERROR(reader.Done());
    c.max_tokens = static_cast<int>(max_tokens);
    c.stop = static_cast<int32_t>(stop);
    c.seed = static_cast<uint64_t>(seed);
    if (c.prompt.size() + static_cast<size_t>(c.max_tokens) > static_cast<size_t>(limits.context)) {
      return reader.Bad("a prompt of " + std::to_string(c.prompt.size()) + " tokens and " +
                        std::to_string(c.max_tokens) + " new ones exceed the context of " +
                        std::to_string(limits.context));
    }
    return Request(std::move(c));
  }
  if (request.kind == kVerifyKind) {
    VerifyRequest v;
    TANDEM_ASSIGN_OR_RETURN(v.sampling, reader.Sampling());
    TANDEM_ASSIGN_OR_RETURN(const int64_t seed, reader.Int("seed", INT64_MIN, INT64_MAX));
    v.seed = static_cast<uint64_t>(seed);
    TANDEM_ASSIGN_OR_RETURN(v.context, ReadTokens(reader, "context", limits.vocab, true));
    TANDEM_ASSIGN_OR_RETURN(v.draft, ReadTokens(reader, "draft", limits.vocab, false));
    if (v.draft.size() > static_cast<size_t>(limits.max_gamma)) {
      return reader.Bad("a draft of " + std::to_string(v.draft.size()) +
                        " tokens exceeds the limit of " + std::to_string(limits.max_gamma));
    }
    TANDEM_ASSIGN_OR_RETURN(const wire::Tensor* q, reader.Tensor("q", wire::DType::kFloat32, 2));
    if (q->shape[0] != v.draft.size() || q->shape[1] != static_cast<uint64_t>(limits.vocab)) {
      return reader.Bad("q: shape (" + std::to_string(q->shape[0]) + "," +
                        std::to_string(q->shape[1]) + "), expected (" +
                        std::to_string(v.draft.size()) + "," + std::to_string(limits.vocab) +
                        ")");
    }
    v.q = q->ToFloat32();
    v.vocab = limits.vocab;
    TANDEM_RETURN_IF_ERROR(reader.Done());
    if (Status s = ValidateDraft(v.context, v.draft, v.q, limits.vocab, limits.context); !s.ok()) {
      return reader.Bad(s.message());
    }
    return Request(std::move(v));
  }
  return Status::InvalidArgument("unknown request kind '" + request.kind + "' (the service knows " +
                                 kCompleteKind + " and " + kVerifyKind + ")");
}

StatusOr<CompleteReply> DecodeCompleteReply(const wire::ServeReply& reply, int vocab) {
  if (reply.tensors.size() != 1 || reply.tensors[0].name != "tokens" ||
      reply.tensors[0].dtype != wire::DType::kUint32 || reply.tensors[0].shape.size() != 1) {
    return Status::InvalidArgument("completion reply: expected one u32 tensor 'tokens' alone");
  }
  CompleteReply out;
  for (uint32_t t : reply.tensors[0].ToUint32()) {
    if (t >= static_cast<uint32_t>(vocab)) {
      return Status::InvalidArgument("completion reply: token " + std::to_string(t) +
                                     " outside the vocabulary");
    }
    out.tokens.push_back(static_cast<int32_t>(t));
  }
  return out;
}

StatusOr<VerifyReply> DecodeVerifyReply(const wire::ServeReply& reply, int vocab, int gamma) {
  if (!reply.tensors.empty()) return Status::InvalidArgument("verify reply: unexpected tensors");
  TANDEM_ASSIGN_OR_RETURN(const int64_t accepted, ReplyInt(reply, "accepted", "verify reply"));
  TANDEM_ASSIGN_OR_RETURN(const int64_t next, ReplyInt(reply, "next", "verify reply"));
  if (accepted < 0 || accepted > gamma || next < 0 || next >= vocab) {
    return Status::InvalidArgument("verify reply: accepted " + std::to_string(accepted) +
                                   " or next " + std::to_string(next) + " out of range");
  }
  return VerifyReply{static_cast<int>(accepted), static_cast<int32_t>(next)};
}

}  // namespace tandem::serve
