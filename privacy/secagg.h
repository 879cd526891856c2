// Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving
// Machine Learning", the honest-but-curious server variant: no signatures, the transport
// authenticates each client to the server) and its SecAgg+ sparse-graph variant (Bell et al.
// 2020), as two state machines that own no sockets: SecAggServer and SecAggClient consume and
// produce the messages below, and the runtime carries them as opaque byte strings.
//
// One round, each step a collect-with-deadline task on the coordinator side:
//   0 AdvertiseKeys   client -> server: two fresh X25519 public keys (c: share encryption,
//                     s: mask agreement).
//   1 ShareKeys       server -> client: KeyList (U1 and the keys of the client's neighbours);
//                     client -> server: ShareKeysMessage, its Shamir shares of b_u and s_u^SK
//                     sealed for each neighbour with AES-256-GCM.
//   2 MaskedInput     server -> client: MaskedInputRequest (the ciphertexts addressed to it from
//                     U2); client -> server: y = x + PRG(b_u) + sum_{v<u} PRG(s_uv)
//                     - sum_{v>u} PRG(s_uv) mod 2^k over its neighbours v in U2, a plain
//                     std::vector<uint64_t> of params.length words.
//   3 Unmask          server -> client: UnmaskRequest (survivors U3 and dropped U2\U3 among its
//                     neighbours); client -> server: UnmaskResponse, b shares of survivors and
//                     s^SK shares of the dropped.
//   4 Finish          the server removes the masks and returns sum_{u in U3} x_u mod 2^k.
// Fewer than `threshold` at any step aborts the round and nothing is unmasked. Keys are fresh
// every round: a SecAggClient and a SecAggServer live for one round.
// Wire format: privacy/secagg_codec.h. This header includes the whole of secure aggregation: the
// parameters (secagg_params.h), the codec, the server (secagg_server.h) and the client
// (secagg_client.h).
#pragma once

#include "privacy/secagg_client.h"
#include "privacy/secagg_codec.h"
#include "privacy/secagg_params.h"
#include "privacy/secagg_server.h"
