package sequencer

import (
	"context"
	"strconv"
	"time"
)

// janitor drops the state of idle games, recording their heads.
func (a *Appender) janitor() {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.IdleEvict / 2)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case now := <-t.C:
			a.mu.Lock()
			for name, g := range a.games {
				if !g.busy && len(g.queue) == 0 && now.Sub(g.lastUsed) >= a.cfg.IdleEvict {
					if g.known && g.lastID > 0 {
						a.checkpoints[name] = g.lastID
					}
					delete(a.games, name)
					if a.m != nil {
						a.m.GamesActive.Dec()
					}
				}
			}
			a.mu.Unlock()
		}
	}
}

// checkpointer writes recorded heads to the heads bucket once a second.
func (a *Appender) checkpointer() {
	defer a.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			a.writeCheckpoints(context.Background())
			return
		case <-t.C:
			a.writeCheckpoints(a.ctx)
		}
	}
}

func (a *Appender) writeCheckpoints(ctx context.Context) {
	a.mu.Lock()
	cps := a.checkpoints
	a.checkpoints = make(map[string]uint64)
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	for game, id := range cps {
		if _, err := a.heads.Put(ctx, game, []byte(strconv.FormatUint(id, 10))); err != nil {
			a.log.Warn("sequencer: write head checkpoint", "game", game, "err", err)
		}
	}
}
