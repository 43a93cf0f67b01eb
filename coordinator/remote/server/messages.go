package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/coordinator/remote"
)

// Device messages (docs/cloud-link.md "Device messages"): nodes upload
// the messages their routes send to the cloud (POST
// /edge/v1/nodes/{node}/messages:batch); the server keeps them per node in
// arrival order, numbered from 1, drops a message whose id the node sent
// in the last messageIDTTL, and answers only once the batch is durable.
// Operators list them (GET /api/v1/messages) and consume them (POST
// /api/v1/messages:consume), which deletes them. The handlers only check
// requests: the store (store.go) keeps the messages, on either engine.

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
)

func (s *Server) messageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /edge/v1/nodes/{node}/messages:batch", s.edge(s.handleMessages))
	mux.HandleFunc("GET /api/v1/messages", s.handleMessageList)
	mux.HandleFunc("POST /api/v1/messages:consume", s.handleConsume)
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
	resp, err := s.st.storeMessages(r.Context(), r.PathValue("node"), req.Messages)
	if err != nil {
		s.storeError(w, "messages not stored", err)
		return
	}
	writeJSON(w, r, http.StatusOK, resp)
}

// StoreMessages stores a node's messages, dropping those whose id it has;
// it returns once they are durable.
func (s *Server) StoreMessages(node string, msgs []remote.Message) (remote.MessagesResponse, error) {
	return s.st.storeMessages(context.Background(), node, msgs)
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
	msgs, err := s.st.messages(r.Context(), node, after, limit)
	if err != nil {
		s.storeError(w, "list messages", err)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"messages": msgs})
}

// Messages lists stored messages of node ("": every node, by node) after
// seq after, at most limit.
func (s *Server) Messages(node string, after uint64, limit int) ([]StoredMessage, error) {
	return s.st.messages(context.Background(), node, after, limit)
}

func (s *Server) handleConsume(w http.ResponseWriter, r *http.Request) {
	var req ConsumeRequest
	if err := readBody(r, &req); err != nil || req.Node == "" {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("want {\"node\": NODE, \"through\": SEQ}: %v", err))
		return
	}
	n, err := s.st.consumeMessages(r.Context(), req.Node, req.Through)
	if err != nil {
		s.storeError(w, "consume messages", err)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]int{"consumed": n})
}

// Consume deletes node's messages up to seq through; their ids are still
// remembered, so a late repeat is not stored again.
func (s *Server) Consume(node string, through uint64) (int, error) {
	return s.st.consumeMessages(context.Background(), node, through)
}
