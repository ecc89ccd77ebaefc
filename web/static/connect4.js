// connect4.js — the rules of the Connect Four demo, as a pure function of
// the game's ordered log. Every client (players and spectators) folds the
// same messages in msg_id order through apply(), so every client computes
// the same board; no DOM here (unit-tested with node --test).
//
// Messages:
//   {"type":"sit","seat":S}          the first two distinct seats to sit are
//                                    Red (0) and Yellow (1); later sits are ignored
//   {"type":"drop","col":C,"seat":S} drop a disc into column C (0..6)
// A drop is ignored unless both seats are taken, S is the seat whose turn it
// is, C is an integer 0..6 whose column is not full, and the game has not
// ended. Red moves first. Anything else in the log is ignored.

export const COLS = 7;
export const ROWS = 6;
export const RED = 0;
export const YELLOW = 1;
export const colorName = ["Red", "Yellow"];

const maxSeatLen = 64;

/** The empty game. board[row][col], row 0 at the bottom; -1 empty, else 0/1. */
export function newGame() {
  return {
    seats: [], // seat ids, [Red, Yellow]
    board: Array.from({ length: ROWS }, () => Array(COLS).fill(-1)),
    turn: RED,
    moves: 0,
    winner: null, // RED | YELLOW | null
    winLine: null, // [[row, col], ...]: the four (or more) in a row
    draw: false,
    ignored: 0, // messages of type sit/drop that were not legal
  };
}

/** Whether the game has ended (win or draw). */
export function over(s) {
  return s.winner !== null || s.draw;
}

/** The color (RED/YELLOW) of seat, or -1. */
export function colorOf(s, seat) {
  return s.seats.indexOf(seat);
}

/** Whether a drop into col by seat would be legal now. */
export function legal(s, seat, col) {
  return (
    !over(s) &&
    s.seats.length === 2 &&
    typeof seat === "string" &&
    s.seats[s.turn] === seat &&
    Number.isInteger(col) &&
    col >= 0 &&
    col < COLS &&
    s.board[ROWS - 1][col] === -1
  );
}

/**
 * Applies one message of the log to s (mutating it) and reports whether it
 * changed the game.
 */
export function apply(s, m) {
  if (m === null || typeof m !== "object") return false;
  switch (m.type) {
    case "sit": {
      const seat = m.seat;
      if (typeof seat !== "string" || seat === "" || seat.length > maxSeatLen || s.seats.length >= 2 || s.seats.includes(seat)) {
        s.ignored++;
        return false;
      }
      s.seats.push(seat);
      return true;
    }
    case "drop": {
      if (!legal(s, m.seat, m.col)) {
        s.ignored++;
        return false;
      }
      const col = m.col;
      let row = 0;
      while (s.board[row][col] !== -1) row++;
      const color = s.turn;
      s.board[row][col] = color;
      s.moves++;
      const line = winLine(s.board, row, col, color);
      if (line) {
        s.winner = color;
        s.winLine = line;
      } else if (s.moves === ROWS * COLS) {
        s.draw = true;
      }
      s.turn = 1 - color;
      return true;
    }
  }
  return false;
}

/** Folds a whole log (in msg_id order) into a new game. */
export function replay(log) {
  const s = newGame();
  for (const m of log) apply(s, m);
  return s;
}

// winLine returns the cells of a line of four or more of color through
// (row, col), or null.
function winLine(board, row, col, color) {
  for (const [dr, dc] of [
    [0, 1],
    [1, 0],
    [1, 1],
    [1, -1],
  ]) {
    const cells = [[row, col]];
    for (const sign of [1, -1]) {
      let r = row + sign * dr;
      let c = col + sign * dc;
      while (r >= 0 && r < ROWS && c >= 0 && c < COLS && board[r][c] === color) {
        cells.push([r, c]);
        r += sign * dr;
        c += sign * dc;
      }
    }
    if (cells.length >= 4) {
      return cells.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    }
  }
  return null;
}

/** The board as text, top row first: "R", "Y" or "." per cell, rows joined by "/". */
export function boardString(s) {
  const rows = [];
  for (let r = ROWS - 1; r >= 0; r--) {
    rows.push(s.board[r].map((v) => (v === RED ? "R" : v === YELLOW ? "Y" : ".")).join(""));
  }
  return rows.join("/");
}
