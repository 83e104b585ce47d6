// Pure logic of the Cones2 Layout Boxes editor: the box-line text (grammar: the node's help
// page web/docs/Cones2LayoutBoxes.md, its one home; parsed as guidance/layout_text.py does),
// snapping to the 8 px grid, and rescaling boxes to a new canvas.
// No DOM and no ComfyUI imports: unit-tested with `node --test tests/js`, and checked against
// the Python parser by tests/unit/test_layout_box_text_js.py.
//
// ComfyUI imports every .js under web/ as an extension; this module only exports functions.

export const BOX_SYNTAX = "<phrase> [#<occurrence>]: <x> <y> <width> <height> [<gamma>]";
export const GRID = 8;

// Python's str.isspace() set (str.strip/str.split/re \s); JS's \s differs (\ufeff, \x1c-\x1f, \x85).
const WS_CHARS = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WS_RUN = new RegExp(`[${WS_CHARS}]+`);
const WS_EDGES = new RegExp(`^[${WS_CHARS}]+|[${WS_CHARS}]+$`, "g");
const SEP = new RegExp(`[${WS_CHARS},]+`);
// Python's str.splitlines() boundaries.
const LINE_BREAK = /\r\n|[\n\v\f\r\x1c-\x1e\x85\u2028\u2029]/;
// ASCII digits only. Python's \d also takes other scripts' digits (see tests/unit/test_layout_box_text_js.py).
const INT = /^[+-]?[0-9]+$/;
const NUMBER = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

/** Python's str.splitlines(): no empty last line for a trailing line break. */
export function splitLines(text) {
  const lines = String(text).split(LINE_BREAK);
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  return lines;
}

/** Python's str.strip() with no argument. */
export function strip(text) {
  return text.replace(WS_EDGES, "");
}

function stripChars(text, chars) {
  let start = 0;
  let end = text.length;
  while (start < end && chars.includes(text[start])) start++;
  while (end > start && chars.includes(text[end - 1])) end--;
  return text.slice(start, end);
}

/** A phrase as the node reads it: surrounding whitespace dropped, inner runs as one space. */
export function normalizePhrase(text) {
  return strip(String(text)).split(WS_RUN).filter(Boolean).join(" ");
}

export class BoxTextError extends Error {
  constructor(line, message) {
    super(message);
    this.line = line;
  }
}

/** "dog" or "dog #2": how a subject is named in messages and labels. */
export function subjectLabel(box) {
  return box.occurrence === 1 ? box.phrase : `${box.phrase} #${box.occurrence}`;
}

/**
 * Parse one non-blank, non-comment line (already stripped) into a box, or throw BoxTextError.
 * A box is {phrase, occurrence, x, y, width, height, gamma} with gamma null when the line leaves it out.
 */
export function parseBoxLine(line, number = 0) {
  const where = `line ${number} (${JSON.stringify(line)})`;
  const colon = line.indexOf(":");
  if (colon < 0) throw new BoxTextError(number, `${where} has no ':'; write ${BOX_SYNTAX}, e.g. 'dog: 32 64 224 320'`);
  const head = line.slice(0, colon);
  const rest = line.slice(colon + 1);
  if (rest.includes(":")) throw new BoxTextError(number, `${where} has more than one ':'; one box per line: ${BOX_SYNTAX}`);
  if (rest.includes("#")) {
    throw new BoxTextError(number, `${where}: '#' after ':' is not allowed; comments go on their own line starting ` +
      "with '#', and the occurrence goes before ':' (e.g. 'dog #2: 288 64 224 320')");
  }
  const hash = head.indexOf("#");
  const phrase = normalizePhrase(hash < 0 ? head : head.slice(0, hash));
  if (!phrase) throw new BoxTextError(number, `${where} has no phrase; name the phrase of the prompt, e.g. 'dog' or 'robot toy'`);
  if (phrase.includes(",")) {
    throw new BoxTextError(number, `${where}: the phrase '${phrase}' holds ','; a phrase cannot contain ',', ':' or '#'`);
  }
  let occurrence = 1;
  if (hash >= 0) {
    const occ = strip(head.slice(hash + 1));
    if (!/^[0-9]+$/.test(occ) || Number(occ) < 1) {
      throw new BoxTextError(number, `${where}: '#${occ}' is not an occurrence; write '#' and a whole number from 1, ` +
        `e.g. '${phrase} #2'`);
    }
    occurrence = Number(occ);
  }
  const fields = stripChars(rest, " \t,").split(SEP).filter(Boolean);
  if (fields.length !== 4 && fields.length !== 5) {
    throw new BoxTextError(number, `${where} has ${fields.length} number(s) after ':'; give x y width height and ` +
      `optionally γ+: ${BOX_SYNTAX}`);
  }
  const names = ["x", "y", "width", "height"];
  const [x, y, width, height] = names.map((name, i) => parsePixels(fields[i], name, where, number));
  const gamma = fields.length === 5 ? parseGamma(fields[4], where, number) : null;
  return { phrase, occurrence, x, y, width, height, gamma };
}

function parsePixels(value, name, where, number) {
  if (INT.test(value)) return Number(value) + 0; // + 0: "-0" is 0
  if (NUMBER.test(value)) {
    throw new BoxTextError(number, `${where}: ${name}=${value} is not a whole number of pixels; round it, e.g. ` +
      `${Math.round(Number(value))}`);
  }
  throw new BoxTextError(number, `${where}: ${name} '${value}' is not a number; write ${BOX_SYNTAX}`);
}

function parseGamma(value, where, number) {
  if (!NUMBER.test(value) || !Number.isFinite(Number(value))) {
    throw new BoxTextError(number, `${where}: γ+ '${value}' is not a number; write it like 2.5, or leave it out`);
  }
  return Number(value);
}

/**
 * Parse the whole text, keeping every line so the editor can write it back unchanged except
 * for the boxes it edits. Returns {lines, errors}: lines[i] is {kind: "box", box, raw} or
 * {kind: "text", raw} (blank, comment, or a line with an error); errors[i] is {line, message}.
 */
export function parseBoxText(text) {
  const lines = [];
  const errors = [];
  splitLines(text).forEach((raw, i) => {
    const stripped = strip(raw);
    if (!stripped || stripped.startsWith("#")) {
      lines.push({ kind: "text", raw });
      return;
    }
    try {
      lines.push({ kind: "box", box: parseBoxLine(stripped, i + 1), raw });
    } catch (e) {
      if (!(e instanceof BoxTextError)) throw e;
      lines.push({ kind: "text", raw, error: e.message });
      errors.push({ line: i + 1, message: e.message });
    }
  });
  return { lines, errors };
}

/** The boxes of a parsed text, in order (each line's index kept as `index`). */
export function boxesOf(lines) {
  return lines.flatMap((l, index) => (l.kind === "box" ? [{ ...l.box, index }] : []));
}

/**
 * The text of parsed lines: untouched lines as they were, edited boxes (raw === null) in the
 * canonical form. Lines are joined with "\n".
 */
export function serializeBoxText(lines) {
  return lines.map((l) => (l.kind === "box" && l.raw == null ? formatBoxLine(l.box) : l.raw)).join("\n");
}

/** The canonical line of a box, as guidance/layout_text.py format_box_line writes it. */
export function formatBoxLine(box) {
  const occurrence = box.occurrence !== 1 ? ` #${box.occurrence}` : "";
  const gamma = box.gamma != null ? ` ${formatNumber(box.gamma)}` : "";
  return `${box.phrase}${occurrence}: ${box.x} ${box.y} ${box.width} ${box.height}${gamma}`;
}

/** Python's format_number: "2" for whole numbers under 1e15, else Python's repr ("2.5", "1e-07"). */
export function formatNumber(value) {
  value = Number(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return String(value + 0);
  return pythonFloatRepr(value);
}

function pythonFloatRepr(value) {
  if (Number.isNaN(value)) return "nan";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  if (value === 0) return Object.is(value, -0) ? "-0.0" : "0.0";
  // toExponential() with no argument gives the shortest digits that read back exactly, as repr does.
  const [mantissa, expText] = value.toExponential().split("e");
  const exp = Number(expText);
  const sign = mantissa.startsWith("-") ? "-" : "";
  const digits = mantissa.replace("-", "").replace(".", "");
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  const whole = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
  const frac = digits.slice(exp + 1);
  return `${sign}${whole}.${frac || "0"}`;
}

/** What identifies a subject for duplicate checks: phrase (case and spacing ignored) and occurrence. */
export function subjectKey(phrase, occurrence) {
  return `${normalizePhrase(phrase).toLowerCase()}\u0000${occurrence}`;
}

/** The smallest occurrence of `phrase` not used by `boxes` (except the box at `skipIndex`). */
export function nextFreeOccurrence(boxes, phrase, skipIndex = -1) {
  const used = new Set(boxes.filter((b) => b.index !== skipIndex).map((b) => subjectKey(b.phrase, b.occurrence)));
  let occurrence = 1;
  while (used.has(subjectKey(phrase, occurrence))) occurrence++;
  return occurrence;
}

/**
 * What the node would reject about these boxes on a width x height canvas (as
 * layout_from_box_lines checks them): [{index, message}] for boxes outside the canvas, of zero
 * area, or a second box for one phrase occurrence.
 */
export function checkBoxes(boxes, width, height) {
  const problems = [];
  const seen = new Map();
  for (const b of boxes) {
    const label = subjectLabel(b);
    if (b.width <= 0 || b.height <= 0) {
      problems.push({ index: b.index, message: `'${label}' is ${b.width}x${b.height}, zero area` });
    } else if (b.x < 0 || b.y < 0 || b.x + b.width > width || b.y + b.height > height) {
      problems.push({ index: b.index, message: `'${label}' reaches outside the ${width}x${height} canvas` });
    }
    const key = subjectKey(b.phrase, b.occurrence);
    if (seen.has(key)) {
      problems.push({ index: b.index, message: `'${label}' has two boxes; one box per phrase occurrence ` +
        `(for another one use '${b.phrase} #${b.occurrence + 1}')` });
    } else {
      seen.set(key, b.index);
    }
  }
  return problems;
}

/** `value` on the 8 px grid, inside [0, limit]; the limit itself is a snap point too. */
export function snap(value, limit = Infinity, grid = GRID) {
  let s = Math.round(value / grid) * grid;
  if (Number.isFinite(limit) && Math.abs(limit - value) < Math.abs(s - value)) s = limit;
  return Math.max(0, Math.min(limit, s));
}

/**
 * The box spanned by two points (any order) on a width x height canvas, snapped to the grid;
 * null when it is thinner than one grid step (a click, not a drag).
 */
export function boxFromDrag(x0, y0, x1, y1, width, height, grid = GRID) {
  const left = snap(Math.min(x0, x1), width, grid);
  const right = snap(Math.max(x0, x1), width, grid);
  const top = snap(Math.min(y0, y1), height, grid);
  const bottom = snap(Math.max(y0, y1), height, grid);
  if (right - left < grid || bottom - top < grid) return null;
  return { x: left, y: top, width: right - left, height: bottom - top };
}

/** `box` moved by (dx, dy) canvas pixels, its corner snapped, kept inside the canvas. */
export function moveBox(box, dx, dy, width, height, grid = GRID) {
  const maxX = Math.max(0, width - box.width);
  const maxY = Math.max(0, height - box.height);
  return { ...box, x: snap(box.x + dx, maxX, grid), y: snap(box.y + dy, maxY, grid) };
}

/**
 * `box` with the edges named in `edges` ("n", "s", "e", "w", or corners like "nw") dragged by
 * (dx, dy), snapped, kept inside the canvas and at least one grid step wide and high.
 */
export function resizeBox(box, edges, dx, dy, width, height, grid = GRID) {
  let left = box.x;
  let top = box.y;
  let right = box.x + box.width;
  let bottom = box.y + box.height;
  const min = Math.min(grid, width, height);
  if (edges.includes("w")) left = Math.min(snap(left + dx, width, grid), right - min);
  if (edges.includes("e")) right = Math.max(snap(right + dx, width, grid), left + min);
  if (edges.includes("n")) top = Math.min(snap(top + dy, height, grid), bottom - min);
  if (edges.includes("s")) bottom = Math.max(snap(bottom + dy, height, grid), top + min);
  left = Math.max(0, left);
  top = Math.max(0, top);
  right = Math.min(width, right);
  bottom = Math.min(height, bottom);
  return { ...box, x: left, y: top, width: right - left, height: bottom - top };
}

/**
 * Boxes of a fromWidth x fromHeight canvas moved to a toWidth x toHeight one: every edge scaled
 * by the size ratio and snapped, then clipped to the new canvas (a box keeps at least one grid
 * step). Returns {boxes, changed, clipped}: how many boxes moved, and how many had to be clipped
 * (they reached outside even the old canvas, or rounding pushed them out).
 */
export function rescaleBoxes(boxes, fromWidth, fromHeight, toWidth, toHeight, grid = GRID) {
  const sx = toWidth / fromWidth;
  const sy = toHeight / fromHeight;
  let changed = 0;
  let clipped = 0;
  const out = boxes.map((b) => {
    const raw = [b.x * sx, b.y * sy, (b.x + b.width) * sx, (b.y + b.height) * sy];
    let [left, top, right, bottom] = [
      snap(raw[0], Infinity, grid), snap(raw[1], Infinity, grid), snap(raw[2], Infinity, grid), snap(raw[3], Infinity, grid),
    ];
    const inside = [Math.max(0, left), Math.max(0, top), Math.min(toWidth, right), Math.min(toHeight, bottom)];
    if (inside.some((v, i) => v !== [left, top, right, bottom][i])) clipped++;
    [left, top, right, bottom] = inside;
    const minW = Math.min(grid, toWidth);
    const minH = Math.min(grid, toHeight);
    if (right - left < minW) {
      if (left + minW <= toWidth) right = left + minW;
      else left = right - minW;
    }
    if (bottom - top < minH) {
      if (top + minH <= toHeight) bottom = top + minH;
      else top = bottom - minH;
    }
    const next = { ...b, x: left, y: top, width: right - left, height: bottom - top };
    if (next.x !== b.x || next.y !== b.y || next.width !== b.width || next.height !== b.height) changed++;
    return next;
  });
  return { boxes: out, changed, clipped };
}

/**
 * Boxes kept at their pixel positions on a new width x height canvas: each is cut to the
 * canvas; one left entirely outside is moved just inside, keeping as much of its size as fits.
 * No snapping. Returns {boxes, changed}.
 */
export function clipBoxes(boxes, width, height) {
  let changed = 0;
  const out = boxes.map((b) => {
    const axis = (start, size, limit) => {
      let lo = Math.max(0, start);
      let hi = Math.min(limit, start + size);
      if (hi - lo < 1) {
        const keep = Math.max(1, Math.min(size, limit));
        lo = Math.min(Math.max(0, start), limit - keep);
        hi = lo + keep;
      }
      return [lo, hi - lo];
    };
    const [x, w] = axis(b.x, b.width, width);
    const [y, h] = axis(b.y, b.height, height);
    if (x !== b.x || y !== b.y || w !== b.width || h !== b.height) changed++;
    return { ...b, x, y, width: w, height: h };
  });
  return { boxes: out, changed };
}
