// Package remote is the node side of the cloud link (docs/cloud-link.md):
// a long-poll loop that takes calls for this node, journals them through
// calls.Durable before acknowledging them, renews their leases and
// advertises free capacity; and a results uploader, independent of
// polling, that sends finished results from the journal's outbox in
// batches until the control plane has them. wire.go holds the wire types
// shared with the reference control plane (package server).
//
// Failure cases of the protocol and the test that shows each (tests in
// this package run the real server in process behind a fault proxy;
// those marked e2e run the real outpost and outpost-cloud binaries as
// subprocesses, in cmd/outpost/cloud_e2e_test.go):
//
//	cloud down (refused)                      TestLinkPollErrorsAndRetryAfter (500), TestLinkProxyCutsPoll
//	500 on poll                               TestLinkPollErrorsAndRetryAfter
//	503/429 Retry-After seconds and date,
//	  server clock an hour off                TestLinkPollErrorsAndRetryAfter, TestParseRetryAfter
//	absent/zero/negative/garbage/10-day RA    TestParseRetryAfter, TestLinkResultUpload429
//	429 on result upload while polls succeed  TestLinkResultUpload429
//	401 mid-stream                            TestLinkAuth
//	403                                       TestLinkAuth
//	same call twice in one response           TestLinkSameCallTwiceInOneResponse, calls.TestJournalDedupe
//	redelivery after a lost ack               TestLinkLostAckAndDuplicates
//	redelivery after lease expiry, running    TestLinkRedeliveryWhileRunning
//	kill -9 before RECEIVED                   e2e TestCloudKillBeforeReceived
//	kill -9 between STARTED and FINISHED      e2e TestCloudKillWhileRunning (idempotent and at-most-once)
//	kill -9 after FINISHED, before upload     e2e TestCloudKillAroundUpload/before_upload
//	kill -9 during the upload                 e2e TestCloudKillAroundUpload/during_upload
//	kill -9 while acknowledging (journal)     calls.TestJournalKill9
//	SIGTERM, drain deadline cuts running and
//	  queued calls: left STARTED/RECEIVED,
//	  nothing uploaded, recovered at the next
//	  start (idempotent and at-most-once)     e2e TestCloudDrainDeadlineCut, calls.TestDurableDrainDeadlineCut
//	result request lost                       TestLinkResultRequestLost
//	result response lost after stored         TestLinkResultResponseLost
//	replay with a different output (409)      server.TestResults
//	410 on a result, cancel while running     TestLinkCancelWhileRunning
//	ttl expiring while offline                TestLinkTTLWhileOffline
//	long outage that fills the outbox         TestLinkOutboxFull
//	disk full during a journal write          calls.TestJournalDiskFull
//	410 on poll and the reconcile             TestLinkGoneAndReconcile
//	proxy cutting the poll                    TestLinkProxyCutsPoll
//	truncated JSON, bad gzip, non-JSON        TestLinkBadResponses, FuzzParsePollResponse
//	flood in bulk with a control trickle      TestLinkControlQueueFirst, calls.TestQueuesControlAndAging
//	zero capacity                             TestLinkOutboxFull, TestLinkZeroCapacity
//	two daemons polling as one node           TestLinkTwoPollers
//	expired, wrong-name, unknown-CA server
//	  certificate (no request sent, backoff,
//	  error names the problem, tls_error)     TestLinkTLSBadCertificates, TestLinkTLSStateWhileRefused
//	certificate rotation mid-session          TestLinkTLSCertificateRotation
//	client certificate (mTLS) rotation
//	  mid-session, same node id (server sees
//	  the new serial, no call lost or re-run) TestLinkMTLSClientCertRotation
//	client certificate rotated to another
//	  node id (not presented, tls_error,
//	  recovers when fixed); presented anyway:
//	  403 from the server, forbidden          TestLinkMTLSClientCertWrongNode, TestLinkMTLSServerChecksNodeID
//	1 byte per 100 ms on poll and on upload   TestLinkSlowDrip (Config.ReadTimeout cuts it)
//	Retry-After date, server clock +1h, -1h,
//	  1970                                    TestLinkRetryAfterDateSkewedServerClock, TestParseRetryAfter
//	lease renewals with a 1970 Date header    TestLinkLeaseRenewalIgnoresDateHeader
//	truncated journal tail (writer killed
//	  mid group commit)                       calls.TestJournalKill9
//	corrupt journal record value              calls.TestJournalCorruptRecord
//	blackhole (TCP accepted, never answered:
//	  each poll ends at the read timeout,
//	  full-jitter backoff, state backoff)     TestLinkBlackhole
//	upload blackhole (result requests never
//	  answered, polls work: outbox holds
//	  FINISHED, capacity 0 past the cap,
//	  each upload cut at the read timeout,
//	  backoff; recorded once after)           TestLinkUploadBlackhole
//	host name does not resolve (DNSError
//	  through Config.DialContext; logged as
//	  "cannot resolve ... <host>", dns_error) TestLinkDNSFailure
//	call names its task's code object by
//	  digest, task not deployed: fetched once,
//	  verified, deployed, run; cached after   coordinator.TestCloudCodeObjects, e2e
//	                                          TestCloudCodeObjectsEndToEnd, TestLinkObjects
//	object gone (404) on fetch                fetch_failed: coordinator.TestCloudCodeObjects,
//	                                          e2e TestCloudCodeObjectsEndToEnd
//	tampered object bytes (hash mismatch)     fetch_failed: the same two tests
//	object over the size cap                  fetch_failed: coordinator.TestCloudCodeObjects
//	task deployed with another module digest  task_conflict: the same two tests
//	unknown digest at enqueue, bad digest on
//	  the wire                                server.TestObjects, TestParsePollResponse
//	1000 nodes back at once after an outage,
//	  each a real Client over its own journal
//	  (first polls spread by full jitter,
//	  each call run once, one result, every
//	  journal REPORTED)                       TestLinkFleetAfterOutage
//	node wall clock +1h, -1h, 1970, 1970 to
//	  today by NTP, +1 year and -1h steps
//	  mid-retention (dedupe retention on the
//	  journal clock, kept across a restart)   calls.TestJournalRetentionIgnoresWallClock,
//	                                          calls.TestJournalMigratesRecordsWithoutClock,
//	                                          calls.TestJournalRecoverOrderIgnoresWallClock
//
// The link itself reads the wall clock for no timing (leases, renewals,
// start_by, backoff and timeouts are monotonic durations); the one read is
// the reference for a Retry-After date when the response has no Date
// header, bounded by MaxRetryAfter.
//
// A monotonic pause longer than the lease (SIGSTOP of the real daemon
// while calls run, 7 s against a 4 s lease): the late renewals are
// refused, the calls redelivered as attempt 2, acknowledged and not run
// again; one run and one result each: e2e TestCloudPauseLongerThanLease,
// server.TestLeaseRenewedTooLate.
package remote
