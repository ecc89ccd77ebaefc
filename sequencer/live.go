package sequencer

import (
	"strconv"

	"github.com/gamerelay/gamerelay/internal/wire"
	"github.com/nats-io/nats.go"
)

// announce makes a stored batch live: it hands the messages to this
// process's feeds (WithLocalFeeds), which deliver them on this
// goroutine, and publishes each on the game's live subject for the feeds
// of other processes, with the headers a feed reads (the stream sequence,
// the game's previous sequence, msg_id, anchor and key). msgs
// carry the stored data and the msg_id header and are reused for the
// copies. Live copies are at most once: a feed that misses one fills the
// gap from the stream.
func (a *Appender) announce(g *gameState, msgs []*nats.Msg, prevSeq uint64, stored []Stored) {
	for i := range stored {
		stored[i].Data = msgs[i].Data
		stored[i].key = msgs[i].Header.Get(nats.MsgIdHdr)
	}
	if a.feeds != nil {
		a.feeds.local(g.name, prevSeq, stored)
	}
	for i, m := range msgs {
		// The key answers an append that asked for no reply
		// (wire.AckLive).
		h := m.Header
		if k := h[nats.MsgIdHdr]; k != nil {
			h[wire.HdrKey] = k
			delete(h, nats.MsgIdHdr)
		}
		delete(h, nats.ExpectedLastSubjSeqHdr)
		delete(h, hdrBatchID)
		delete(h, hdrBatchSeq)
		delete(h, hdrBatchCommit)
		vals := make([]string, 3) // one allocation for the new values
		vals[0] = strconv.FormatUint(stored[i].Seq, 10)
		vals[1] = strconv.FormatUint(prevSeq, 10)
		h[wire.HdrSeq], h[wire.HdrPrev] = vals[0:1:1], vals[1:2:2]
		if stored[i].Anchor != 0 {
			vals[2] = strconv.FormatUint(stored[i].Anchor, 10)
			h[wire.HdrAnchor] = vals[2:3:3]
		}
		prevSeq = stored[i].Seq
		m.Subject, m.Reply = g.live, "" // a reply subject would draw "no responders"
		if err := a.live.PublishMsg(m); err != nil {
			// Feeds find the message by their head checks.
			a.log.Debug("sequencer: publish live copy", "game", g.name, "err", err)
		}
	}
}

// announceFound makes live a message an earlier attempt stored: that
// attempt's ack, and so its live copy, may have been lost. Its predecessor
// is not known here: naming the message itself matches no feed's
// position, so feeds read from the stream what they lack.
func (a *Appender) announceFound(g *gameState, st Stored) {
	m := &nats.Msg{Header: nats.Header{wire.HdrMsgID: {strconv.FormatUint(st.ID, 10)}}, Data: st.Data}
	if st.key != "" {
		m.Header[nats.MsgIdHdr] = []string{st.key}
	}
	a.announce(g, []*nats.Msg{m}, st.Seq, []Stored{st})
}
