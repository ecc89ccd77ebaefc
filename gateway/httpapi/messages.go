package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/gamerelay/gamerelay/sequencer"
)

// msgIDReply answers appends.
type msgIDReply struct {
	MsgID uint64 `json:"msg_id"`
}

// gameParam returns the game id of the request's path.
func gameParam(r *http.Request) (string, error) {
	game := r.PathValue("id")
	if err := wire.ValidateGame(game); err != nil {
		return "", errorf(http.StatusBadRequest, wire.CodeInvalidGame, "%v", err)
	}
	return game, nil
}

// known checks that game has a stored message and returns the last one.
func (a *API) known(ctx context.Context, game string) (sequencer.Stored, error) {
	head, ok, err := a.reader.Head(ctx, game)
	switch {
	case err != nil:
		return head, unavailable("the game could not be read; try again", err)
	case !ok:
		return head, errorf(http.StatusNotFound, wire.CodeUnknownGame, "game %s does not exist", game)
	}
	return head, nil
}

// publish appends a backend message: the caller's object plus
// "client_id":"" and "source":<owner>. With an Idempotency-Key K the
// sequencer's key is "api:<owner>:<game>:<K>": retries within the
// duplicate window append once and get the same msg_id (200).
func (a *API) publish(r *http.Request, owner string) (int, any, error) {
	game, err := gameParam(r)
	if err != nil {
		return 0, nil, err
	}
	idem, err := idempotencyKey(r)
	if err != nil {
		return 0, nil, err
	}
	body, err := a.readBody(r)
	if err != nil {
		return 0, nil, err
	}
	if err := checkMessage(body, typeRequired); err != nil {
		return 0, nil, err
	}
	if idem != "" {
		idem = "api:" + owner + ":" + game + ":" + idem
	}
	return a.appendSystem(r.Context(), game, systemBody("", members(body), owner), idem, http.StatusCreated)
}

// end appends the system message game_ended, with the members of the
// optional body object (say {"reason":"finished"}). Its idempotency key is
// "api-end:<owner>:<game>:<K>" with an Idempotency-Key K, else
// "api-end:<game>", so repeated ends within the duplicate window append
// one message.
func (a *API) end(r *http.Request, owner string) (int, any, error) {
	game, err := gameParam(r)
	if err != nil {
		return 0, nil, err
	}
	idem, err := idempotencyKey(r)
	if err != nil {
		return 0, nil, err
	}
	body, err := a.readBody(r)
	if err != nil {
		return 0, nil, err
	}
	var fields []byte
	if len(bytes.TrimSpace(body)) > 0 {
		if err := checkMessage(body, typeSetByAPI); err != nil {
			return 0, nil, err
		}
		fields = members(body)
	}
	if idem != "" {
		idem = "api-end:" + owner + ":" + game + ":" + idem
	} else {
		idem = "api-end:" + game
	}
	return a.appendSystem(r.Context(), game, systemBody(typeGameEnded, fields, owner), idem, http.StatusOK)
}

// appendSystem appends body to an existing game and answers its msg_id
// with status (200 for a duplicate).
func (a *API) appendSystem(ctx context.Context, game string, body []byte, idem string, status int) (int, any, error) {
	if _, err := a.known(ctx, game); err != nil {
		return 0, nil, err
	}
	res, err := a.app.Append(ctx, game, body, idem)
	if err != nil {
		return 0, nil, appendError(err)
	}
	if res.Duplicate {
		status = http.StatusOK
	}
	return status, msgIDReply{MsgID: res.MsgID}, nil
}

// appendError maps a failed append to its reply.
// outcomeUnknown is a 503 for an append whose outcome is not known.
func outcomeUnknown(cause error) *apiError {
	return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeOutcomeUnknown,
		msg: "no answer in time: the message may have been stored; retry with the same Idempotency-Key", cause: cause}
}

func appendError(err error) error {
	var se *sequencer.Error
	if !errors.As(err, &se) {
		return outcomeUnknown(err)
	}
	switch se.Code {
	case wire.CodeInvalidGame, wire.CodeInvalidMessage, wire.CodeReservedField:
		return errorf(http.StatusBadRequest, se.Code, "%s", se.Msg)
	case wire.CodeTooLarge:
		return errorf(http.StatusRequestEntityTooLarge, se.Code, "%s", se.Msg)
	case wire.CodeUnavailable:
		return unavailable("the message was not stored; send it again", err)
	case wire.CodeOutcomeUnknown:
		return outcomeUnknown(err)
	}
	return &apiError{status: http.StatusInternalServerError, code: wire.CodeInternal, msg: "the message could not be stored", cause: err}
}

// History paging.
const (
	defaultLimit = 100
	maxLimit     = 1000
	// maxPageBytes ends a page early: at least one message, then no more
	// once the page holds this many bytes of messages.
	maxPageBytes = 4 << 20
)

// messagesReply is a history page.
type messagesReply struct {
	Messages []json.RawMessage `json:"messages"`
	Next     uint64            `json:"next"`
	Head     uint64            `json:"head"`
}

var errPageFull = errors.New("page full")

// messages answers a page of the game's history: the messages with
// msg_id > since in order, at most limit of them. The stream serves what
// it holds (walking its anchors, no scan), the archive what retention
// removed.
func (a *API) messages(r *http.Request, _ string) (int, any, error) {
	game, err := gameParam(r)
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	var since uint64
	if s := q.Get("since"); s != "" {
		if since, err = strconv.ParseUint(s, 10, 64); err != nil {
			return 0, nil, errorf(http.StatusBadRequest, wire.CodeInvalidMessage, "since: want a non-negative integer")
		}
	}
	limit := defaultLimit
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 {
			return 0, nil, errorf(http.StatusBadRequest, wire.CodeInvalidMessage, "limit: want a positive integer (at most %d)", maxLimit)
		}
		limit = min(limit, maxLimit)
	}
	ctx := r.Context()
	head, err := a.known(ctx, game)
	if err != nil {
		return 0, nil, err
	}
	page := messagesReply{Messages: []json.RawMessage{}, Next: since, Head: head.ID}
	if since >= head.ID {
		return http.StatusOK, page, nil
	}
	upto := min(head.ID, since+uint64(limit))
	size := 0
	add := func(id uint64, frame []byte) error {
		page.Messages = append(page.Messages, frame)
		page.Next = id
		if size += len(frame); size >= maxPageBytes {
			return errPageFull
		}
		return nil
	}
	fromStream := func(m sequencer.Stored) error { return add(m.ID, m.Data) }
	err = a.reader.Range(ctx, game, since, upto, &head, fromStream)
	var te *sequencer.TruncatedError
	if errors.As(err, &te) {
		err = a.fromArchive(ctx, game, since, upto, te, &head, add, fromStream)
	}
	var ae *apiError
	switch {
	case err == nil, errors.Is(err, errPageFull):
		return http.StatusOK, page, nil
	case errors.As(err, &ae):
		return 0, nil, ae
	}
	return 0, nil, unavailable("the history could not be read; try again", err)
}

// fromArchive serves (since, upto] when the stream starts after since+1:
// the archive up to the stream's first message, then the stream.
func (a *API) fromArchive(ctx context.Context, game string, since, upto uint64, te *sequencer.TruncatedError,
	head *sequencer.Stored, add func(uint64, []byte) error, fromStream func(sequencer.Stored) error) error {
	if te.FirstID == 0 {
		return te // the stream lost the game while we read: try again
	}
	if a.history == nil {
		return errorf(http.StatusGone, wire.CodeHistoryGap,
			"messages before msg_id %d are no longer stored here and no archive is configured; read from since=%d", te.FirstID, te.FirstID-1)
	}
	err := a.history.Range(ctx, game, since, min(te.FirstID-1, upto), func(id uint64, frame []byte) error {
		return add(id, bytes.Clone(frame))
	})
	if err != nil || upto < te.FirstID {
		return err
	}
	return a.reader.Range(ctx, game, te.FirstID-1, upto, head, fromStream)
}
