// RaftProbe: what the raft core counts, as plain atomics (STYLE practice 10).
// exporter/ publishes them under etcd's names; raft never includes prometheus.
// RawNode updates the probe it was given in Config.probe (may be null) from the
// raft loop thread; any thread may read it.
#pragma once

#include "src/common/probe.h"

namespace engram::raft {

struct RaftProbe {
  // etcd_server_leader_changes_seen_total: +1 each time a Ready reports a new
  // non-zero leader different from the last one reported (so >= 1 once a
  // leader is known after boot).
  Counter leader_changes_seen;
  // etcd_server_has_leader / etcd_server_is_leader, set from each Ready's SoftState.
  Gauge has_leader;
  Gauge is_leader;
  // etcd_server_proposals_committed_total (a gauge): the commit index, set on
  // Advance() from the hard state that was just persisted.
  Gauge proposals_committed;
  // etcd_server_proposals_failed_total, raft's share: Propose/ProposeBatch/
  // ProposeConfChange calls that returned an error (the server adds timeouts).
  Counter proposals_failed;
  // etcd_server_heartbeat_send_failures_total. Raft cannot see send failures:
  // the transport increments this one (raft never does).
  Counter heartbeat_send_failures;
  // etcd_server_read_indexes_failed_total, raft's share: ReadIndex requests
  // dropped for want of a leader, or lost when leadership changed.
  Counter read_indexes_failed;
  // Not etcd metrics; for the exporter's debugging families and tests.
  Gauge term;
  Counter elections_started;  // campaigns (pre-vote or vote) this node started
};

}  // namespace engram::raft
