// The ZeroMQ transport: the coordinator's Server (a ROUTER) and a client's Client (a DEALER) move
// tandem Messages, chunked when large, over tcp://, ipc:// or inproc://, with CURVE encryption and
// a ZAP allow-list on tcp. Each transport runs one I/O thread that owns its socket, validates
// every incoming frame (codec, chunks, session) and keeps heartbeats flowing while the owner is
// busy; the owner's threads only call Send, Broadcast and Receive. The coordinator's memory stays
// O(model): a broadcast is encoded once for all peers, and clients upload large messages only when
// granted (ChunkOffer / ChunkGrant). Behaviour: docs/protocol.md "Transport".
#pragma once

// The transport is split along its seams: the value types (transport_types.h), the coordinator's
// Server (transport_server.h) and a client's Client (transport_client.h). This header includes
// all three, for code that uses both sides or does not care which.
#include "wire/transport_client.h"
#include "wire/transport_server.h"
#include "wire/transport_types.h"
