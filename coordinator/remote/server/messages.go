package server

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// Device messages (docs/cloud-link.md "Device messages"): nodes upload
// the messages their routes send to the cloud (POST
// /edge/v1/nodes/{node}/messages:batch); the server keeps them per node in
// arrival order, numbered from 1 (key msg/{node}/{seq}), drops a message
// whose id it stored in the last messageIDTTL (key msgid/{node}/{id}), and
// answers only once the batch is synced. Operators list them (GET
// /api/v1/messages) and consume them (POST /api/v1/messages:consume),
// which deletes them.

// StoredMessage is a device message as the server keeps and lists it.
type StoredMessage struct {
	Seq      uint64    `json:"seq"` // per node, from 1, in arrival order
	Node     string    `json:"node"`
	ID       string    `json:"id"`
	Topic    string    `json:"topic"`
	Payload  []byte    `json:"payload"`
	QoS      byte      `json:"qos"`
	Time     time.Time `json:"time"`     // when the node took it (its clock)
	Received time.Time `json:"received"` // when the server stored it
}

// ConsumeRequest is the body of POST /api/v1/messages:consume: delete the
// node's messages up to seq through.
type ConsumeRequest struct {
	Node    string `json:"node"`
	Through uint64 `json:"through"`
}

// messageIDTTL is how long a stored message's id is remembered to drop a
// repeated upload: far longer than a node retries one.
const messageIDTTL = 7 * 24 * time.Hour

// Limits of an uploaded message.
const (
	maxMessageID    = 64
	maxMessageTopic = 65535 // an MQTT topic
	// messageChunk bounds the bytes of messages written in one badger
	// transaction (a batch is written in several).
	messageChunk = 512 << 10
)

func (s *Server) messageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /edge/v1/nodes/{node}/messages:batch", s.edge(s.handleMessages))
	mux.HandleFunc("GET /api/v1/messages", s.handleMessageList)
	mux.HandleFunc("POST /api/v1/messages:consume", s.handleConsume)
}

func msgPrefix(node string) []byte { return []byte("msg/" + node + "/") }

func msgKey(node string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(msgPrefix(node), seq)
}

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	var req remote.MessagesRequest
	if err := readBody(r, &req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	for i, m := range req.Messages {
		switch {
		case m.ID == "" || len(m.ID) > maxMessageID:
			httpError(w, http.StatusBadRequest, fmt.Sprintf("messages[%d]: id must be 1 to %d bytes", i, maxMessageID))
			return
		case m.Topic == "" || len(m.Topic) > maxMessageTopic:
			httpError(w, http.StatusBadRequest, fmt.Sprintf("messages[%d] (%s): topic must be 1 to %d bytes", i, m.ID, maxMessageTopic))
			return
		case len(m.Payload) > remote.MaxInput:
			httpError(w, http.StatusBadRequest, fmt.Sprintf("messages[%d] (%s): payload of %d bytes (at most %d)", i, m.ID, len(m.Payload), remote.MaxInput))
			return
		}
	}
	resp, err := s.StoreMessages(r.PathValue("node"), req.Messages)
	if err != nil {
		s.log.Error("store device messages", "node", r.PathValue("node"), "err", err)
		httpError(w, http.StatusServiceUnavailable, "messages not stored: "+err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, resp)
}

// StoreMessages stores a node's messages, dropping those whose id it has;
// it returns once they are synced.
func (s *Server) StoreMessages(node string, msgs []remote.Message) (remote.MessagesResponse, error) {
	s.msgMu.Lock()
	defer s.msgMu.Unlock()
	var resp remote.MessagesResponse
	seen := map[string]bool{}
	for len(msgs) > 0 {
		n, size := 0, 0
		for n < len(msgs) && (n == 0 || size+len(msgs[n].Payload) <= messageChunk) {
			size += len(msgs[n].Payload)
			n++
		}
		err := s.db.Update(func(txn *badger.Txn) error {
			seqKey := []byte("msgseq/" + node)
			var seq uint64
			if item, err := txn.Get(seqKey); err == nil {
				if err := item.Value(func(v []byte) error { seq = binary.BigEndian.Uint64(v); return nil }); err != nil {
					return err
				}
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			now := time.Now().UTC()
			for _, m := range msgs[:n] {
				idKey := []byte("msgid/" + node + "/" + m.ID)
				if _, err := txn.Get(idKey); err == nil || seen[m.ID] {
					resp.Duplicates++
					continue
				} else if !errors.Is(err, badger.ErrKeyNotFound) {
					return err
				}
				seen[m.ID] = true
				seq++
				v, err := json.Marshal(StoredMessage{Seq: seq, Node: node, ID: m.ID, Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Time: m.Time, Received: now})
				if err != nil {
					return err
				}
				if err := txn.Set(msgKey(node, seq), v); err != nil {
					return err
				}
				if err := txn.SetEntry(badger.NewEntry(idKey, nil).WithTTL(messageIDTTL)); err != nil {
					return err
				}
				resp.Stored++
			}
			return txn.Set(seqKey, binary.BigEndian.AppendUint64(nil, seq))
		})
		if err != nil {
			return remote.MessagesResponse{}, err
		}
		msgs = msgs[n:]
	}
	return resp, nil // the DB syncs every write (SyncWrites)
}

// maxMessageList bounds one listing.
const maxMessageList = 10000

func (s *Server) handleMessageList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	node := q.Get("node")
	limit, after := 1000, uint64(0)
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxMessageList {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: want 1 to %d", v, maxMessageList))
			return
		}
		limit = n
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || node == "" {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("after=%q: want a seq, with node", v))
			return
		}
		after = n
	}
	msgs, err := s.Messages(node, after, limit)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"messages": msgs})
}

// Messages lists stored messages of node ("": every node, by node) after
// seq after, at most limit.
func (s *Server) Messages(node string, after uint64, limit int) ([]StoredMessage, error) {
	prefix := []byte("msg/")
	if node != "" {
		prefix = msgPrefix(node)
	}
	out := []StoredMessage{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: prefix})
		defer it.Close()
		start := prefix
		if node != "" {
			start = msgKey(node, after+1)
		}
		for it.Seek(start); it.Valid() && len(out) < limit; it.Next() {
			var m StoredMessage
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &m) }); err != nil {
				return fmt.Errorf("decode %q: %w", it.Item().Key(), err)
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

func (s *Server) handleConsume(w http.ResponseWriter, r *http.Request) {
	var req ConsumeRequest
	if err := readBody(r, &req); err != nil || req.Node == "" {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("want {\"node\": NODE, \"through\": SEQ}: %v", err))
		return
	}
	n, err := s.Consume(req.Node, req.Through)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]int{"consumed": n})
}

// Consume deletes node's messages up to seq through; their ids are still
// remembered, so a late repeat is not stored again.
func (s *Server) Consume(node string, through uint64) (int, error) {
	s.msgMu.Lock()
	defer s.msgMu.Unlock()
	total := 0
	for {
		n := 0
		err := s.db.Update(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: msgPrefix(node)})
			var keys [][]byte
			for it.Rewind(); it.Valid() && len(keys) < 1000; it.Next() {
				k := it.Item().KeyCopy(nil)
				if binary.BigEndian.Uint64(k[len(k)-8:]) > through {
					break
				}
				keys = append(keys, k)
			}
			it.Close()
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("consume messages of %s: %w", node, err)
		}
		total += n
		if n < 1000 {
			return total, nil
		}
	}
}
