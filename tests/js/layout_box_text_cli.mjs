// Reads JSON requests, one per line, on stdin and answers each on stdout, so Python tests can
// compare web/lib/layout_box_text.js with guidance/layout_text.py (tests/unit/test_layout_box_text_js.py).
//   {"parse": text}  -> {"boxes": [...], "errors": [{line, message}], "serialized": text}
//   {"format": box}  -> {"line": text}
import { createInterface } from "node:readline";

import { boxesOf, formatBoxLine, parseBoxText, serializeBoxText } from "../../web/lib/layout_box_text.js";

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const request of rl) {
  if (!request.trim()) continue;
  const req = JSON.parse(request);
  let answer;
  if ("parse" in req) {
    const { lines, errors } = parseBoxText(req.parse);
    const boxes = boxesOf(lines).map(({ index, ...b }) => b);
    const canonical = lines.map((l) => (l.kind === "box" ? { ...l, raw: null } : l));
    answer = { boxes, errors, serialized: serializeBoxText(canonical) };
  } else {
    answer = { line: formatBoxLine(req.format) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
