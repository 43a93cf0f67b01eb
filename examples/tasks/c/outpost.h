/*
 * outpost.h: the Outpost task ABI v1 for C (docs/abi.md), for clang with
 * wasi-libc:
 *
 *   clang-14 --target=wasm32-wasi -mexec-model=reactor -O2 -I examples/tasks/c \
 *       -o task.wasm task.c
 *
 * -mexec-model=reactor links crt1-reactor.o, which exports _initialize (the
 * host calls it once per instance: it runs the C constructors) instead of
 * _start. A task defines the two exports declared at the end with
 * OUTPOST_EXPORT, and may call the host functions below.
 *
 * Return codes of the functions returning int32_t: a length or 0 on success,
 * a negative OUTPOST_* code on failure; the failure's message is then the
 * call's "held value", read with outpost_result. Data-producing functions
 * (kv_get, kv_list, call, meta) copy min(len, cap) bytes to buf and return
 * the full length: when it is larger than cap, allocate it and call
 * outpost_result (the operation is not repeated).
 */
#ifndef OUTPOST_H
#define OUTPOST_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define OUTPOST_OK 0
#define OUTPOST_DENIED (-1)      /* the task's permissions do not allow it */
#define OUTPOST_NOT_FOUND (-2)   /* no such kv key, or no such task */
#define OUTPOST_INVALID (-3)     /* a bad argument */
#define OUTPOST_TOO_LARGE (-4)   /* a payload or value over the limits */
#define OUTPOST_QUOTA (-5)       /* a kv put would exceed the kv quota */
#define OUTPOST_FAILED (-6)      /* the operation failed */
#define OUTPOST_UNAVAILABLE (-7) /* the host has no such service */
#define OUTPOST_TOO_LATE (-8)    /* call_async_by: the need-by time cannot be met */
#define OUTPOST_CONFLICT (-9)    /* a shadow request naming an old version */

#define OUTPOST_DEBUG 0
#define OUTPOST_INFO 1
#define OUTPOST_WARN 2
#define OUTPOST_ERROR 3

#define OUTPOST_META_CALL_ID 0
#define OUTPOST_META_SOURCE 1
#define OUTPOST_META_IDEMPOTENCY_KEY 2
#define OUTPOST_META_TASK 3

#define OUTPOST_IMPORT(name) __attribute__((import_module("outpost"), import_name(name)))
#define OUTPOST_EXPORT(name) __attribute__((export_name(name)))

/* Fails the current call with a message (the first one is kept); return
 * from outpost_handle promptly afterwards. */
OUTPOST_IMPORT("fail") void outpost_fail(const void *msg, uint32_t len);
/* Logs a message with the task name; level OUTPOST_DEBUG..OUTPOST_ERROR. */
OUTPOST_IMPORT("log") void outpost_log(int32_t level, const void *msg, uint32_t len);
/* Publishes an MQTT message (qos 0, 1 or 2) to a topic that one of the
 * task's permissions.publish filters matches. */
OUTPOST_IMPORT("publish") int32_t outpost_publish(const void *topic, uint32_t topic_len,
                                                  const void *payload, uint32_t payload_len, int32_t qos);
/* The task's own key-value namespace (needs permissions.kv_quota). */
OUTPOST_IMPORT("kv_get") int32_t outpost_kv_get(const void *key, uint32_t key_len, void *buf, uint32_t cap);
OUTPOST_IMPORT("kv_put") int32_t outpost_kv_put(const void *key, uint32_t key_len, const void *val, uint32_t val_len);
OUTPOST_IMPORT("kv_delete") int32_t outpost_kv_delete(const void *key, uint32_t key_len);
/* Keys starting with prefix, each as a little-endian u32 length + bytes. */
OUTPOST_IMPORT("kv_list") int32_t outpost_kv_list(const void *prefix, uint32_t prefix_len, void *buf, uint32_t cap);
/* Calls another task (needs permissions.call) and waits for its output. */
OUTPOST_IMPORT("call") int32_t outpost_call(const void *task, uint32_t task_len, const void *in, uint32_t in_len,
                                            void *buf, uint32_t cap);
/* Submits a call of another task without waiting: a handle (> 0) for
 * outpost_await or outpost_suspend, or a negative code. call_async_by says
 * when the result is needed (Unix ns; 0: the call's deadline); the host
 * schedules the call to finish by then or refuses it (OUTPOST_TOO_LATE). */
OUTPOST_IMPORT("call_async") int32_t outpost_call_async(const void *task, uint32_t task_len, const void *in, uint32_t in_len);
OUTPOST_IMPORT("call_async_by") int32_t outpost_call_async_by(const void *task, uint32_t task_len, const void *in,
                                                              uint32_t in_len, int64_t need_by);
/* Waits for a handle (the instance stays parked): the output's length (held
 * for outpost_result) or a negative code. */
OUTPOST_IMPORT("await") int32_t outpost_await(int32_t handle, int32_t timeout_ms);
/* Ends the run suspended once outpost_handle (or outpost_resume) returns:
 * the host keeps state (bytes) and calls outpost_resume with it and the
 * results of the handles when they have all finished, on any instance,
 * possibly after a restart. 0, or OUTPOST_UNAVAILABLE when the call cannot
 * suspend (not journaled: use outpost_await), OUTPOST_INVALID. */
OUTPOST_IMPORT("suspend") int32_t outpost_suspend(const void *state, uint32_t state_len, const int32_t *handles,
                                                  uint32_t count);
/* Copies the held value (data or an error message) to buf; its full length. */
OUTPOST_IMPORT("result") int32_t outpost_result(void *buf, uint32_t cap);
/* Metadata of the call being served: OUTPOST_META_*. */
OUTPOST_IMPORT("meta") int32_t outpost_meta(int32_t field, void *buf, uint32_t cap);
/* Nanoseconds since the Unix epoch: the call's deadline (0: none), now. */
OUTPOST_IMPORT("deadline") int64_t outpost_deadline(void);
OUTPOST_IMPORT("now") int64_t outpost_now(void);
/* Device shadows (needs a permissions.shadows pattern matching thing; name
 * empty for the classic shadow): the length of the held document (read it
 * with outpost_result), or a code with the AWS error document held. */
OUTPOST_IMPORT("shadow_get") int32_t outpost_shadow_get(const void *thing, uint32_t thing_len, const void *name,
                                                        uint32_t name_len);
OUTPOST_IMPORT("shadow_update") int32_t outpost_shadow_update(const void *thing, uint32_t thing_len, const void *name,
                                                              uint32_t name_len, const void *req, uint32_t req_len);
OUTPOST_IMPORT("shadow_delete") int32_t outpost_shadow_delete(const void *thing, uint32_t thing_len, const void *name,
                                                              uint32_t name_len, const void *req, uint32_t req_len);

/* The exports a reactor task defines. outpost_alloc returns at least size
 * writable bytes (valid until the next outpost_alloc); outpost_handle returns
 * OUTPOST_OUTPUT(ptr, len), which must stay valid until the next call. */
OUTPOST_EXPORT("outpost_alloc") void *outpost_alloc(uint32_t size);
OUTPOST_EXPORT("outpost_handle") uint64_t outpost_handle(uint8_t *in, uint32_t len);

/* A task that suspends also defines outpost_resume: its input is the resume
 * document (read it with outpost_resume_next), its output as for
 * outpost_handle. */
OUTPOST_EXPORT("outpost_resume") uint64_t outpost_resume(uint8_t *in, uint32_t len);

#define OUTPOST_OUTPUT(ptr, len) (((uint64_t)(uintptr_t)(ptr) << 32) | (uint32_t)(len))

/* Helpers for NUL-terminated strings. */
static inline void outpost_fail_str(const char *msg) { outpost_fail(msg, (uint32_t)strlen(msg)); }
static inline void outpost_log_str(int32_t level, const char *msg) { outpost_log(level, msg, (uint32_t)strlen(msg)); }

/* Copies the held message into buf (cap > 0) as a NUL-terminated string, cut
 * to fit, and returns buf. */
static inline char *outpost_held_str(char *buf, uint32_t cap) {
	int32_t n = outpost_result(buf, cap - 1);
	if (n < 0) n = 0;
	if ((uint32_t)n > cap - 1) n = (int32_t)(cap - 1);
	buf[n] = 0;
	return buf;
}

/* Reading a resume document: u32 state length, the state, u32 count, then
 * per result i32 handle, i32 code, u32 length, the bytes (little-endian). */
typedef struct {
	int32_t handle, code; /* code: 0, data is the output; < 0, data is the message */
	const uint8_t *data;
	uint32_t len;
} outpost_resumed;

static inline uint32_t outpost_u32le(const uint8_t *p) {
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Points *state at the kept state and returns the number of results, which
 * follow at *cursor; -1 if the document is malformed. */
static inline int32_t outpost_resume_open(const uint8_t *doc, uint32_t len, const uint8_t **state,
                                          uint32_t *state_len, const uint8_t **cursor, const uint8_t **end) {
	if (len < 4) return -1;
	uint32_t sl = outpost_u32le(doc);
	if (sl > len - 8) return -1;
	*state = doc + 4;
	*state_len = sl;
	*cursor = doc + 8 + sl;
	*end = doc + len;
	return (int32_t)outpost_u32le(doc + 4 + sl);
}

/* Reads the next result at *cursor; 0, or -1 if the document is malformed. */
static inline int32_t outpost_resume_next(const uint8_t **cursor, const uint8_t *end, outpost_resumed *r) {
	const uint8_t *p = *cursor;
	if (end - p < 12) return -1;
	r->handle = (int32_t)outpost_u32le(p);
	r->code = (int32_t)outpost_u32le(p + 4);
	r->len = outpost_u32le(p + 8);
	if ((uint32_t)(end - p - 12) < r->len) return -1;
	r->data = p + 12;
	*cursor = p + 12 + r->len;
	return 0;
}

#endif
