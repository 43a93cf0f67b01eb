//go:build wasip1

package sdk

// The host functions of module "outpost" (docs/abi.md, ABI v1). A nil
// pointer with length 0 is address 0, which is always in range.

//go:wasmimport outpost fail
func hostFail(ptr *byte, size uint32)

//go:wasmimport outpost log
func hostLog(level int32, ptr *byte, size uint32)

//go:wasmimport outpost publish
func hostPublish(topic *byte, topicLen uint32, payload *byte, payloadLen uint32, qos int32) int32

//go:wasmimport outpost kv_get
func hostKVGet(key *byte, keyLen uint32, buf *byte, bufCap uint32) int32

//go:wasmimport outpost kv_put
func hostKVPut(key *byte, keyLen uint32, val *byte, valLen uint32) int32

//go:wasmimport outpost kv_delete
func hostKVDelete(key *byte, keyLen uint32) int32

//go:wasmimport outpost kv_list
func hostKVList(prefix *byte, prefixLen uint32, buf *byte, bufCap uint32) int32

//go:wasmimport outpost call
func hostCall(task *byte, taskLen uint32, in *byte, inLen uint32, buf *byte, bufCap uint32) int32

//go:wasmimport outpost result
func hostResult(buf *byte, bufCap uint32) int32

//go:wasmimport outpost meta
func hostMeta(field int32, buf *byte, bufCap uint32) int32

//go:wasmimport outpost deadline
func hostDeadline() int64

//go:wasmimport outpost now
func hostNow() int64

//go:wasmimport outpost call_async
func hostCallAsync(task *byte, taskLen uint32, in *byte, inLen uint32) int32

//go:wasmimport outpost call_async_by
func hostCallAsyncBy(task *byte, taskLen uint32, in *byte, inLen uint32, needBy int64) int32

//go:wasmimport outpost await
func hostAwait(handle int32, timeoutMS int32) int32

//go:wasmimport outpost suspend
func hostSuspend(state *byte, stateLen uint32, handles *int32, count uint32) int32

//go:wasmimport outpost shadow_get
func hostShadowGet(thing *byte, thingLen uint32, name *byte, nameLen uint32) int32

//go:wasmimport outpost shadow_update
func hostShadowUpdate(thing *byte, thingLen uint32, name *byte, nameLen uint32, req *byte, reqLen uint32) int32

//go:wasmimport outpost shadow_delete
func hostShadowDelete(thing *byte, thingLen uint32, name *byte, nameLen uint32, req *byte, reqLen uint32) int32
