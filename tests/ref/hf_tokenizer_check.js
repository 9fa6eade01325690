// hf_tokenizer_check.js — encodes a UTF-8 text file with a tokenizer.json in
// Hugging Face's Rust tokenizers (npm `tokenizers`), prints the ids separated
// by spaces, then on a second line whether decoding them gives the text back.
// Usage: node hf_tokenizer_check.js TOKENIZER.json TEXT_FILE
'use strict';
const fs = require('fs');
const path = require('path');
const {Tokenizer} = require(path.join(__dirname, '..', '..', '.cache', 'npm', 'node_modules', 'tokenizers'));

(async () => {
  const [tokPath, textPath] = process.argv.slice(2);
  const tok = Tokenizer.fromFile(tokPath);
  const text = fs.readFileSync(textPath, 'utf8');
  const enc = await tok.encode(text, null, {addSpecialTokens: false});
  const ids = enc.getIds();
  console.log(ids.join(' '));
  const back = await tok.decode(ids, false);
  console.log(back === text ? 'roundtrip' : 'differs');
})().catch((e) => { console.error(String(e)); process.exit(1); });
