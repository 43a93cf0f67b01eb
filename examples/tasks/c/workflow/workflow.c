/*
 * workflow: a fan-out/fan-in task that suspends between its steps
 * (docs/abi.md "Suspending a call").
 *
 * Input "N" (or "N F" or "N F D"): the sum of k*k for k = 1..N, each square computed by
 * a call of the task "square" (this same module deployed under that name),
 * BATCH calls per step. After submitting a step's calls the run suspends,
 * keeping its progress (struct progress) as its state; outpost_resume gets
 * the state back with the squares, adds them up and starts the next step,
 * until the output "sum=S steps=T". A call that cannot suspend (one that is
 * not journaled, such as a synchronous admin call) awaits each handle
 * instead, holding its instance.
 *
 * Input "sq K", "sq K F" or "sq K F D": the square K*K, after D
 * milliseconds of busy work (0 by default); it fails when K equals F (F 0:
 * never; a workflow "N F" shows a dependency that fails).
 */
#include <stdio.h>
#include <stdlib.h>

#include "outpost.h"

#define BATCH 50

static uint8_t *inbuf;
static uint32_t incap;
static char out[64];

OUTPOST_EXPORT("outpost_alloc") void *outpost_alloc(uint32_t size) {
	if (size > incap || inbuf == NULL) {
		free(inbuf);
		incap = size > 4096 ? size : 4096;
		inbuf = malloc(incap);
	}
	return inbuf;
}

/* progress is the state kept while suspended. */
struct progress {
	uint32_t n, fail, delay, next, steps;
	uint64_t sum;
};

static uint64_t output(const char *s) {
	size_t n = strlen(s);
	memcpy(out, s, n);
	return OUTPOST_OUTPUT(out, n);
}

static uint64_t fail_with(const char *what, const uint8_t *msg, uint32_t len) {
	char buf[256];
	int n = snprintf(buf, sizeof buf, "%s: %.*s", what, (int)(len > 200 ? 200 : len), (const char *)msg);
	outpost_fail(buf, (uint32_t)n);
	return 0;
}

/* fail_held fails the call with what and the held message. */
static uint64_t fail_held(const char *what) {
	char msg[200];
	outpost_held_str(msg, sizeof msg);
	return fail_with(what, (const uint8_t *)msg, (uint32_t)strlen(msg));
}

/* add adds the output of one square call (a decimal number) to p. */
static int add(struct progress *p, int32_t code, const uint8_t *data, uint32_t len) {
	if (code < 0) return -1;
	char num[32];
	if (len >= sizeof num) return -1;
	memcpy(num, data, len);
	num[len] = 0;
	p->sum += strtoull(num, NULL, 10);
	return 0;
}

/* step submits the next batch of calls and suspends, or, when the call
 * cannot suspend, awaits them and goes on; it returns the run's result. */
static uint64_t step(struct progress *p) {
	static const char square[] = "square";
	while (p->next <= p->n) {
		int32_t handles[BATCH];
		uint32_t count = 0;
		for (; count < BATCH && p->next <= p->n; count++, p->next++) {
			char in[48];
			int n = snprintf(in, sizeof in, "sq %u %u %u", p->next, p->fail, p->delay);
			int32_t h = outpost_call_async(square, sizeof square - 1, in, (uint32_t)n);
			if (h < 0) return fail_held("call_async square");
			handles[count] = h;
		}
		p->steps++;
		int32_t rc = outpost_suspend(p, sizeof *p, handles, count);
		if (rc == OUTPOST_OK) return 0; /* the output is ignored: the run is suspended */
		if (rc != OUTPOST_UNAVAILABLE) return fail_held("suspend");
		for (uint32_t i = 0; i < count; i++) {
			char num[32];
			int32_t n = outpost_await(handles[i], 0);
			if (n < 0) return fail_held("square failed");
			if ((uint32_t)n > sizeof num || outpost_result(num, sizeof num) != n || add(p, 0, (const uint8_t *)num, (uint32_t)n) < 0) {
				outpost_fail_str("square: output is not a number");
				return 0;
			}
		}
	}
	char s[64];
	snprintf(s, sizeof s, "sum=%llu steps=%u", (unsigned long long)p->sum, p->steps);
	return output(s);
}

OUTPOST_EXPORT("outpost_handle") uint64_t outpost_handle(uint8_t *in, uint32_t len) {
	char text[64];
	if (len >= sizeof text) {
		outpost_fail_str("input too long: want \"N\", \"N F\", \"sq K\" or \"sq K F\"");
		return 0;
	}
	memcpy(text, in, len);
	text[len] = 0;
	unsigned k = 0, f = 0, d = 0;
	if (sscanf(text, "sq %u %u %u", &k, &f, &d) >= 1) {
		/* Busy: the daemon's WASI has no sleep (a sleeping guest could not be
		 * stopped at its deadline). */
		for (int64_t until = outpost_now() + (int64_t)d * 1000000; outpost_now() < until;) {
		}
		if (k == f) {
			char msg[64];
			snprintf(msg, sizeof msg, "square of %u refused", k);
			outpost_fail_str(msg);
			return 0;
		}
		char s[32];
		snprintf(s, sizeof s, "%llu", (unsigned long long)k * k);
		return output(s);
	}
	struct progress p = {.next = 1};
	if (sscanf(text, "%u %u %u", &p.n, &p.fail, &p.delay) < 1) {
		outpost_fail_str("want \"N\", \"N F\", \"sq K\" or \"sq K F\"");
		return 0;
	}
	return step(&p);
}

OUTPOST_EXPORT("outpost_resume") uint64_t outpost_resume(uint8_t *in, uint32_t len) {
	const uint8_t *state, *cur, *end;
	uint32_t sl;
	int32_t count = outpost_resume_open(in, len, &state, &sl, &cur, &end);
	struct progress p;
	if (count < 0 || sl != sizeof p) {
		outpost_fail_str("resume: malformed document");
		return 0;
	}
	memcpy(&p, state, sizeof p);
	for (int32_t i = 0; i < count; i++) {
		outpost_resumed r;
		if (outpost_resume_next(&cur, end, &r) < 0) {
			outpost_fail_str("resume: malformed result");
			return 0;
		}
		if (add(&p, r.code, r.data, r.len) < 0) return fail_with("square failed", r.data, r.len);
	}
	return step(&p);
}
