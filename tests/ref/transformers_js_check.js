// transformers_js_check.js — loads a `moe export --format onnx` folder with
// Transformers.js (npm @huggingface/transformers, its text-generation
// pipeline on onnxruntime-node's CPU library) for tests/ref/test_transformers_js.py.
// Usage: node transformers_js_check.js DIR PROMPT N. Prints JSON: the
// pipeline's tokenizer's ids of PROMPT (prompt_ids), the N greedy ids its
// model generates after them (greedy; fewer when it stops at the eos token)
// and the pipeline's greedy text (text).
'use strict';
const path = require('path');
const tf = require('@huggingface/transformers');

async function main() {
  const [dir, prompt, n] = process.argv.slice(2);
  tf.env.allowRemoteModels = false;
  tf.env.localModelPath = path.dirname(path.resolve(dir)) + path.sep;
  // the folder holds model.onnx itself (subfolder ''), float32 inputs and
  // outputs whatever the weights' type (dtype fp32: the file model.onnx)
  const gen = await tf.pipeline('text-generation', path.basename(dir),
    {dtype: 'fp32', subfolder: '', device: 'cpu'});
  const inputs = gen.tokenizer(prompt);
  const prompt_ids = Array.from(inputs.input_ids.data, Number);
  const out = await gen.model.generate({...inputs, max_new_tokens: Number(n), do_sample: false});
  const greedy = Array.from(out.data, Number).slice(prompt_ids.length);
  const text = (await gen(prompt, {max_new_tokens: Number(n), do_sample: false}))[0].generated_text;
  process.stdout.write(JSON.stringify({prompt_ids, greedy, text}) + '\n');
}

main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
