// Unit tests of web/lib/layout_box_text.js (run: node --test tests/js; pytest runs them too).
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  boxFromDrag,
  boxesOf,
  checkBoxes,
  clipBoxes,
  formatBoxLine,
  formatNumber,
  moveBox,
  nextFreeOccurrence,
  parseBoxLine,
  parseBoxText,
  rescaleBoxes,
  resizeBox,
  serializeBoxText,
  snap,
  splitLines,
} from "../../web/lib/layout_box_text.js";

const box = (phrase, occurrence, x, y, width, height, gamma = null) => ({ phrase, occurrence, x, y, width, height, gamma });

describe("parseBoxLine", () => {
  it("reads the documented examples", () => {
    assert.deepEqual(parseBoxLine("dog: 32 64 224 320", 1), box("dog", 1, 32, 64, 224, 320));
    assert.deepEqual(parseBoxLine("dog #2: 288, 64, 224, 320, 2.0", 1), box("dog", 2, 288, 64, 224, 320, 2));
  });

  it("takes commas, tabs and spaces as separators, also right after ':' and at the end", () => {
    assert.deepEqual(parseBoxLine("robot   toy #3:,32,\t64 ,, 8 8 1e-1,", 4), box("robot toy", 3, 32, 64, 8, 8, 0.1));
  });

  it("accepts signs and leading zeros as Python's int() does", () => {
    assert.deepEqual(parseBoxLine("cat: +08 -0 010 1", 1), box("cat", 1, 8, 0, 10, 1));
    assert.ok(!Object.is(parseBoxLine("cat: -0 0 8 8", 1).x, -0));
  });

  for (const [line, fragment] of [
    ["dog 32 64 224 320", "has no ':'"],
    ["dog: 1: 2 3 4", "more than one ':'"],
    ["dog: 1 2 3 4 # note", "'#' after ':'"],
    [" #2: 1 2 3 4", "has no phrase"],
    ["a, b: 1 2 3 4", "holds ','"],
    ["dog #0: 1 2 3 4", "is not an occurrence"],
    ["dog #x: 1 2 3 4", "is not an occurrence"],
    ["dog #2 #3: 1 2 3 4", "is not an occurrence"],
    ["dog: 1 2 3", "has 3 number(s)"],
    ["dog: 1 2 3 4 5 6", "has 6 number(s)"],
    ["dog: 1.5 2 3 4", "x=1.5 is not a whole number of pixels"],
    ["dog: 1 2 3 four", "height 'four' is not a number"],
    ["dog: 1 2 3 4 1e999", "is not a number"],
    ["dog: 1 2 3 4 nan", "is not a number"],
  ]) {
    it(`rejects ${JSON.stringify(line)} naming the problem and the line`, () => {
      assert.throws(() => parseBoxLine(line, 7), (e) => e.line === 7 && e.message.includes(fragment) &&
        e.message.startsWith("line 7 "));
    });
  }
});

describe("parseBoxText / serializeBoxText", () => {
  const text = "# two dogs\n\ndog: 32, 64, 224, 320\nbad line\ndog #2: 288 64 224 320 2.0\n";

  it("keeps comments, blanks and bad lines, and reports each error with its line", () => {
    const { lines, errors } = parseBoxText(text);
    assert.deepEqual(lines.map((l) => l.kind), ["text", "text", "box", "text", "box"]);
    assert.deepEqual(errors.map((e) => e.line), [4]);
    assert.deepEqual(boxesOf(lines).map((b) => [b.phrase, b.occurrence, b.index]), [["dog", 1, 2], ["dog", 2, 4]]);
  });

  it("writes untouched lines back verbatim and edited boxes canonically", () => {
    const { lines } = parseBoxText(text);
    assert.equal(serializeBoxText(lines), text.replace(/\n$/, ""));
    lines[2] = { kind: "box", box: { ...lines[2].box, x: 40 }, raw: null };
    assert.equal(serializeBoxText(lines), "# two dogs\n\ndog: 40 64 224 320\nbad line\ndog #2: 288 64 224 320 2.0");
  });

  it("splits lines where Python's splitlines does", () => {
    assert.deepEqual(splitLines("a\r\nb\rc\x0bd\x1ce\u2028f\n"), ["a", "b", "c", "d", "e", "f"]);
    assert.deepEqual(splitLines(""), []);
    assert.deepEqual(splitLines("\n"), [""]);
  });

  it("treats Python's whitespace (not JS's) as whitespace", () => {
    assert.equal(parseBoxLine("\x1fdog\x85cat\x1f: 1 2 3 4", 1).phrase, "dog cat");
    assert.equal(parseBoxLine("\ufeffdog: 1 2 3 4", 1).phrase, "\ufeffdog");
  });
});

describe("formatting", () => {
  it("writes the canonical line", () => {
    assert.equal(formatBoxLine(box("dog", 1, 32, 64, 224, 320)), "dog: 32 64 224 320");
    assert.equal(formatBoxLine(box("dog", 2, 288, 64, 224, 320, 2)), "dog #2: 288 64 224 320 2");
    assert.equal(formatBoxLine(box("robot toy", 1, 0, 0, 8, 8, 2.5)), "robot toy: 0 0 8 8 2.5");
  });

  it("formats numbers as Python's format_number (repr for non-integers)", () => {
    const cases = [[2, "2"], [2.5, "2.5"], [-1, "-1"], [0.1, "0.1"], [1e-7, "1e-07"], [0.0001, "0.0001"],
      [0.00001, "1e-05"], [1.5e-5, "1.5e-05"], [123.456, "123.456"], [1e15, "1000000000000000.0"],
      [1e16, "1e+16"], [1.2345e20, "1.2345e+20"], [-0, "0"], [1 / 3, "0.3333333333333333"]];
    for (const [value, text] of cases) assert.equal(formatNumber(value), text, String(value));
  });
});

describe("checks", () => {
  it("flags boxes the node would refuse", () => {
    const boxes = [box("dog", 1, 0, 0, 512, 512), box("Dog", 1, 8, 8, 8, 8), box("cat", 1, 500, 0, 16, 8),
      box("cow", 1, 0, 0, 0, 8)].map((b, index) => ({ ...b, index }));
    const problems = checkBoxes(boxes, 512, 512);
    assert.deepEqual(problems.map((p) => p.index), [1, 2, 3]);
    assert.match(problems[0].message, /two boxes/);
    assert.match(problems[1].message, /outside the 512x512 canvas/);
    assert.match(problems[2].message, /zero area/);
  });

  it("finds the next free occurrence of a phrase, case and spacing ignored", () => {
    const boxes = [box("dog", 1, 0, 0, 8, 8), box("DOG ", 2, 0, 0, 8, 8), box("cat", 1, 0, 0, 8, 8)]
      .map((b, index) => ({ ...b, index }));
    assert.equal(nextFreeOccurrence(boxes, "dog"), 3);
    assert.equal(nextFreeOccurrence(boxes, "dog", 0), 1);
    assert.equal(nextFreeOccurrence(boxes, "bird"), 1);
  });
});

describe("snapping and geometry", () => {
  it("snaps to the 8 px grid inside the canvas, the canvas edge included", () => {
    assert.equal(snap(11.9), 8);
    assert.equal(snap(12.1), 16);
    assert.equal(snap(-5), 0);
    assert.equal(snap(515, 516), 516);
    assert.equal(snap(600, 512), 512);
  });

  it("makes a snapped box from a drag in any direction, and none from a click", () => {
    assert.deepEqual(boxFromDrag(29, 43, 251, 298, 512, 384), { x: 32, y: 40, width: 216, height: 256 });
    assert.deepEqual(boxFromDrag(251, 298, 29, 43, 512, 384), { x: 32, y: 40, width: 216, height: 256 });
    assert.deepEqual(boxFromDrag(-20, -20, 900, 900, 512, 384), { x: 0, y: 0, width: 512, height: 384 });
    assert.equal(boxFromDrag(100, 100, 102, 101, 512, 384), null);
  });

  it("moves a box on the grid and keeps it inside", () => {
    const b = box("dog", 1, 32, 40, 216, 256);
    assert.deepEqual(moveBox(b, 13, -3, 512, 384), { ...b, x: 48, y: 40 });
    assert.deepEqual(moveBox(b, 1000, 1000, 512, 384), { ...b, x: 296, y: 128 });
    assert.deepEqual(moveBox(b, -1000, -1000, 512, 384), { ...b, x: 0, y: 0 });
  });

  it("resizes by edges and corners, never below one grid step nor past the canvas", () => {
    const b = box("dog", 1, 32, 40, 216, 256);
    assert.deepEqual(resizeBox(b, "se", 21, 30, 512, 384), { ...b, width: 240, height: 288 });
    assert.deepEqual(resizeBox(b, "nw", -100, -100, 512, 384), { ...b, x: 0, y: 0, width: 248, height: 296 });
    assert.deepEqual(resizeBox(b, "e", -1000, 0, 512, 384), { ...b, width: 8 });
    assert.deepEqual(resizeBox(b, "s", 0, 1000, 512, 384), { ...b, height: 344 });
  });

  it("rescales boxes to a new canvas, snapped, and counts what had to be clipped", () => {
    const boxes = [box("dog", 1, 32, 64, 224, 320), box("cat", 1, 256, 0, 256, 512)];
    const up = rescaleBoxes(boxes, 512, 512, 768, 512);
    assert.deepEqual(up.boxes.map((b) => [b.x, b.y, b.width, b.height]), [[48, 64, 336, 320], [384, 0, 384, 512]]);
    assert.equal(up.changed, 2);
    assert.equal(up.clipped, 0);
    const odd = rescaleBoxes([box("dog", 1, 0, 0, 600, 8)], 512, 512, 256, 256);
    assert.deepEqual(odd.boxes.map((b) => [b.x, b.y, b.width, b.height]), [[0, 0, 256, 8]]);
    assert.equal(odd.clipped, 1);
    const same = rescaleBoxes(boxes, 512, 512, 512, 512);
    assert.equal(same.changed, 0);
  });

  it("clips boxes to a smaller canvas at their pixel positions, without snapping", () => {
    const boxes = [box("dog", 1, 3, 5, 100, 100), box("cat", 1, 400, 300, 200, 50), box("cow", 1, 600, 10, 40, 20)];
    const { boxes: out, changed } = clipBoxes(boxes, 512, 320);
    assert.deepEqual(out.map((b) => [b.x, b.y, b.width, b.height]), [[3, 5, 100, 100], [400, 300, 112, 20],
      [472, 10, 40, 20]]);
    assert.equal(changed, 2);
    assert.equal(clipBoxes(boxes.slice(0, 1), 512, 320).changed, 0);
  });
});
