// The inference service's requests and replies as typed values, and their wire form: a
// ServeRequest / ServeReply (wire/message.h) whose kind, parameters and tensors both sides encode
// and decode here, so the service and its clients cannot disagree (docs/protocol.md "The
// inference service"). Decoding checks every field a request carries against the served model
// (vocabulary, context) and the service's limits; a request that fails is refused whole.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "core/status.h"
#include "route/sampling.h"
#include "wire/message.h"

namespace tandem::serve {

inline constexpr const char* kCompleteKind = "serve.complete";
inline constexpr const char* kVerifyKind = "serve.verify";
inline constexpr const char* kInfoKind = "serve.info";
// What a serve-only client lists in its Hello: the coordinator welcomes it without making it a
// member of any cohort.
inline constexpr const char* kServeCapability = "serve.client";

// A completion: up to max_tokens after `prompt`, sampled from the cloud's distribution under
// `sampling` with randomness from `seed`, ending after end-of-text or `stop` (>= 0; -1 none).
struct CompleteRequest {
  std::vector<int32_t> prompt;  // (T) non-empty, tokens in [0, V)
  int max_tokens = 1;           // >= 1; T + max_tokens <= the served context
  SamplingOptions sampling;
  uint64_t seed = 0;
  int32_t stop = -1;
};

struct CompleteReply {
  std::vector<int32_t> tokens;  // the new tokens only
};

// A speculative-decoding verification (route/speculative.h, Verifier::Verify): the whole context
// so far, the γ drafted tokens, the device's q rows (γ,V) they were drawn from, and the sampling
// options and seed of the cloud's p and of the acceptance draws.
struct VerifyRequest {
  std::vector<int32_t> context;  // (T) non-empty
  std::vector<int32_t> draft;    // (γ)
  std::vector<float> q;          // (γ,V)
  int vocab = 0;                 // V, the width of q's rows (also when γ = 0)
  SamplingOptions sampling;
  uint64_t seed = 0;
};

struct VerifyReply {
  int accepted = 0;   // in [0, γ]
  int32_t next = -1;  // the token after the accepted ones
};

// What the service serves: no parameters; answered at once, never counted as a call.
struct InfoRequest {};

struct InfoReply {
  int vocab = 0;
  int context = 0;
  int max_new_tokens = 0;
  int max_gamma = 0;
};

using Request = std::variant<CompleteRequest, VerifyRequest, InfoRequest>;

// What the served model and the service allow; decoding refuses anything outside.
struct RequestLimits {
  int vocab = 256;
  int context = 0;
  int max_new_tokens = 256;  // a completion's max_tokens
  int max_gamma = 64;        // a verification's draft length
};

// Encoding (client side). The message's task_id is the request id, which the caller sets.
wire::ServeRequest EncodeRequest(const CompleteRequest& request, uint32_t deadline_ms);
wire::ServeRequest EncodeRequest(const VerifyRequest& request, uint32_t deadline_ms);
wire::ServeReply EncodeReply(const CompleteReply& reply);
wire::ServeReply EncodeReply(const VerifyReply& reply);
wire::ServeRequest EncodeInfoRequest();
wire::ServeReply EncodeReply(const InfoReply& reply);

// Decoding. Errors (InvalidArgument, naming the field): an unknown kind, a missing or extra
// parameter or tensor, a wrong type or dtype, a value out of range (tokens outside [0, V), a
// sequence beyond the context, a draft beyond max_gamma, q rows that are not distributions).
StatusOr<Request> DecodeRequest(const wire::ServeRequest& request, const RequestLimits& limits);
StatusOr<CompleteReply> DecodeCompleteReply(const wire::ServeReply& reply, int vocab);
StatusOr<VerifyReply> DecodeVerifyReply(const wire::ServeReply& reply, int vocab, int gamma);
StatusOr<InfoReply> DecodeInfoReply(const wire::ServeReply& reply);
// The service's timing of a reply (its "queue_ms" and "compute_ms"), 0 when absent.
double ReplyMillis(const wire::ServeReply& reply, const char* key);

}  // namespace tandem::serve
