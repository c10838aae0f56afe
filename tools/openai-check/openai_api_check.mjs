// Drives statetune's OpenAI-compatible HTTP API with the official `openai` SDK (tests/http). Steps:
//   train   upload a chat-format fine-tuning file, create a job, poll it to `succeeded`, list its events
//           and checkpoints; prints
//           {"fine_tuned_model": ...} on stdout
//   serve   models.list, completions and chat completions (streaming and not) with MODEL, and the
//           SDK's errors for another tenant's model and bad parameters
// Environment: TRAIN_URL / SERVE_URL (http://127.0.0.1:PORT/v1), API_KEY, OTHER_KEY, BASE_MODEL, MODEL.
import assert from "node:assert/strict";
import OpenAI, { toFile } from "openai";

// Debian 12's Node.js 18 has no global File (the SDK's uploads need one); node:buffer has it.
if (typeof File === "undefined") globalThis.File = (await import("node:buffer")).File;

const step = process.argv[2];
const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const client = (url, key) => new OpenAI({ baseURL: url, apiKey: key, maxRetries: 0, timeout: 120_000 });

async function expectStatus(status, promise, what) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `${what}: not an APIError: ${e}`);
    assert.equal(e.status, status, `${what}: status ${e.status}: ${e.message}`);
    assert.equal(typeof e.error?.message, "string", `${what}: no error.message`);
    return e;
  }
  assert.fail(`${what}: succeeded, expected ${status}`);
}

async function train() {
  const openai = client(env("TRAIN_URL"), env("API_KEY"));
  // Chat-format lines (rendered with the chat template into prompt/completion pairs).
  const words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];
  const lines = words.map((w, i) =>
    JSON.stringify({ messages: [{ role: "user", content: `${i + 1} in words?` }, { role: "assistant", content: w }] }));
  const file = await openai.files.create({
    file: await toFile(Buffer.from(lines.join("\n") + "\n"), "numbers.jsonl"),
    purpose: "fine-tune",
  });
  assert.equal(file.object, "file");
  assert.equal(file.purpose, "fine-tune");
  assert.equal(file.filename, "numbers.jsonl");
  assert.equal((await openai.files.retrieve(file.id)).id, file.id);
  assert.ok((await openai.files.list()).data.some((f) => f.id === file.id));

  // A malformed file: the SDK sees a 400 whose message names the line.
  const bad = await expectStatus(400, openai.files.create({
    file: await toFile(Buffer.from(lines[0] + "\n{\"messages\": [{\"role\": \"user\"}]}\n"), "bad.jsonl"),
    purpose: "fine-tune",
  }), "malformed file");
  assert.match(bad.message, /line 2/);

  const job = await openai.fineTuning.jobs.create({
    model: env("BASE_MODEL"),
    training_file: file.id,
    suffix: "numbers-sdk",
    seed: 3,
    method: { type: "supervised", supervised: { hyperparameters: { batch_size: 2, max_steps: 4, max_length: 32 } } },
  });
  assert.equal(job.object, "fine_tuning.job");
  assert.ok(["validating_files", "queued", "running"].includes(job.status), job.status);
  assert.equal(job.fine_tuned_model, null);
  let current = job;
  const deadline = Date.now() + 240_000;
  while (!["succeeded", "failed", "cancelled"].includes(current.status)) {
    assert.ok(Date.now() < deadline, `job still ${current.status} after 240 s`);
    await new Promise((r) => setTimeout(r, 200));
    current = await openai.fineTuning.jobs.retrieve(job.id);
  }
  assert.equal(current.status, "succeeded", JSON.stringify(current.error));
  assert.equal(current.fine_tuned_model, "numbers-sdk");
  const events = await openai.fineTuning.jobs.listEvents(job.id, { limit: 100 });
  assert.ok(events.data.some((e) => e.type === "metrics"), "no metrics events");
  // The trainer's checkpoints (every 2 steps: the test runs --checkpoint-every 2; max_steps 4), newest
  // first and paginated as OpenAI's.
  const checkpoints = await openai.fineTuning.jobs.checkpoints.list(job.id, { limit: 100 });
  assert.deepEqual(checkpoints.data.map((c) => c.step_number), [4, 2], JSON.stringify(checkpoints.data));
  for (const c of checkpoints.data) {
    assert.equal(c.object, "fine_tuning.job.checkpoint");
    assert.equal(c.fine_tuning_job_id, job.id);
    assert.equal(c.metrics.step, c.step_number);
    assert.ok(Number.isFinite(c.metrics.train_loss) && c.metrics.train_loss > 0, JSON.stringify(c.metrics));
  }
  const newest = await openai.fineTuning.jobs.checkpoints.list(job.id, { limit: 1 });
  assert.equal(newest.data.length, 1);
  assert.equal(newest.has_more, true);
  const older = await openai.fineTuning.jobs.checkpoints.list(job.id, { limit: 1, after: newest.data[0].id });
  assert.deepEqual(older.data.map((c) => c.step_number), [2]);
  assert.ok(events.data.some((e) => e.message === "Checkpoint saved at step 4"), "no checkpoint event");
  const page = await openai.fineTuning.jobs.list({ limit: 10 });
  assert.ok(page.data.some((j) => j.id === job.id));
  await expectStatus(404, openai.fineTuning.jobs.retrieve("job-0000000000000000"), "unknown job");
  // Another tenant sees neither the file nor the job.
  const other = client(env("TRAIN_URL"), env("OTHER_KEY"));
  await expectStatus(404, other.files.retrieve(file.id), "another tenant's file");
  await expectStatus(404, other.fineTuning.jobs.retrieve(job.id), "another tenant's job");
  await expectStatus(404, other.fineTuning.jobs.checkpoints.list(job.id), "another tenant's job's checkpoints");
  await expectStatus(404, other.fineTuning.jobs.create({ model: env("BASE_MODEL"), training_file: file.id }),
                     "a job on another tenant's file");
  await expectStatus(401, client(env("TRAIN_URL"), "wrong-key").files.list(), "a wrong key");
  console.log(JSON.stringify({ fine_tuned_model: current.fine_tuned_model }));
}

async function serve() {
  const openai = client(env("SERVE_URL"), env("API_KEY"));
  const model = env("MODEL");
  const models = await openai.models.list();
  const ids = models.data.map((m) => m.id);
  assert.ok(ids.includes(env("BASE_MODEL")), `models: ${ids}`);
  assert.ok(ids.includes(model), `models: ${ids}`);
  assert.equal(models.data.find((m) => m.id === model).owned_by, env("TENANT"));
  assert.equal((await openai.models.retrieve(model)).id, model);

  const completion = await openai.completions.create({ model, prompt: "3 in words?", max_tokens: 5, temperature: 0 });
  assert.equal(completion.object, "text_completion");
  assert.equal(completion.choices.length, 1);
  assert.equal(completion.choices[0].finish_reason, "length");
  assert.equal(completion.usage.completion_tokens, 5);
  assert.ok(completion.usage.prompt_tokens > 0);

  // The same greedy request streamed gives the same text.
  const stream = await openai.completions.create({
    model, prompt: "3 in words?", max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let streamed = "", finish = null, usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      streamed += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(streamed, completion.choices[0].text);
  assert.equal(finish, "length");
  assert.equal(usage.completion_tokens, 5);

  const messages = [{ role: "user", content: "3 in words?" }];
  const chat = await openai.chat.completions.create({ model, messages, max_tokens: 4, temperature: 0, seed: 1 });
  assert.equal(chat.object, "chat.completion");
  assert.equal(chat.choices[0].message.role, "assistant");
  assert.equal(chat.usage.completion_tokens <= 4, true);
  const chatStream = await openai.chat.completions.create({ model, messages, max_tokens: 4, temperature: 0, seed: 1, stream: true });
  let chatText = "", chatFinish = null;
  for await (const chunk of chatStream) {
    for (const c of chunk.choices) {
      chatText += c.delta.content ?? "";
      if (c.finish_reason) chatFinish = c.finish_reason;
    }
  }
  assert.equal(chatText, chat.choices[0].message.content);
  assert.equal(chatFinish, chat.choices[0].finish_reason);

  // The adapter changes what is generated: with the base model the same sampled request differs, or
  // (a random-weight base repeating one token) at least the request works.
  const base = await openai.completions.create({ model: env("BASE_MODEL"), prompt: "3 in words?", max_tokens: 5, temperature: 0 });
  assert.equal(base.choices[0].finish_reason, "length");

  // Errors the SDK raises, with OpenAI's statuses.
  const other = client(env("SERVE_URL"), env("OTHER_KEY"));
  const e404 = await expectStatus(404, other.completions.create({ model, prompt: "x", max_tokens: 1 }), "another tenant's adapter");
  assert.equal(e404.code, "model_not_found");
  await expectStatus(404, other.models.retrieve(model), "another tenant's model");
  assert.ok(!(await other.models.list()).data.some((m) => m.id === model), "another tenant lists the adapter");
  await expectStatus(400, openai.completions.create({ model, prompt: "x", max_tokens: 0 }), "max_tokens 0");
  await expectStatus(400, openai.completions.create({ model, prompt: "x", max_tokens: 1, temperature: -1 }), "temperature -1");
  await expectStatus(400, openai.completions.create({ model, prompt: "x", max_tokens: 1, top_p: 0 }), "top_p 0");
  await expectStatus(400, openai.completions.create({ model, prompt: "x", max_tokens: 1, n: 17 }), "n 17");

  // Several prompts and n choices each: one scheduler row per choice, `index` in prompt-major order,
  // usage summed; greedy choices of one prompt are that prompt's single completion. Streamed, the
  // chunks of the choices interleave and add up to the same texts.
  const prompts = ["3 in words?", "4 in words?"];
  const multi = await openai.completions.create({
    model, prompt: prompts, n: 2, max_tokens: 5, temperature: 0, ignore_eos: true,
  });
  assert.deepEqual(multi.choices.map((c) => c.index), [0, 1, 2, 3]);
  assert.equal(multi.usage.completion_tokens, 20);
  assert.equal(multi.choices[0].text, completion.choices[0].text);
  assert.equal(multi.choices[1].text, completion.choices[0].text);
  const single4 = await openai.completions.create({ model, prompt: prompts[1], max_tokens: 5, temperature: 0, ignore_eos: true });
  assert.equal(multi.choices[2].text, single4.choices[0].text);
  assert.equal(multi.choices[3].text, single4.choices[0].text);
  assert.equal(multi.usage.prompt_tokens, 2 * (completion.usage.prompt_tokens + single4.usage.prompt_tokens));
  const multiStream = await openai.completions.create({
    model, prompt: prompts, n: 2, max_tokens: 5, temperature: 0, ignore_eos: true, stream: true,
    stream_options: { include_usage: true },
  });
  const texts = ["", "", "", ""], finishes = [];
  let multiUsage = null;
  for await (const chunk of multiStream) {
    if (chunk.usage) multiUsage = chunk.usage;
    for (const c of chunk.choices) {
      texts[c.index] += c.text;
      if (c.finish_reason) finishes.push(c.index);
    }
  }
  assert.deepEqual(texts, multi.choices.map((c) => c.text));
  assert.deepEqual(finishes.sort(), [0, 1, 2, 3]);
  assert.equal(multiUsage.completion_tokens, 20);
  // Sampled choices of one prompt differ (seed, seed + 1, ...), and the same seed repeats them.
  const sampled = { model, prompt: "once upon a time", n: 3, max_tokens: 8, temperature: 1, seed: 11, ignore_eos: true };
  const a = await openai.completions.create(sampled), b = await openai.completions.create(sampled);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  assert.ok(new Set(a.choices.map((c) => c.text)).size > 1, `n = 3 sampled one text: ${JSON.stringify(a.choices)}`);
  const chatMulti = await openai.chat.completions.create({
    model, messages: [{ role: "user", content: "3 in words?" }], n: 2, max_tokens: 4, temperature: 0,
  });
  assert.deepEqual(chatMulti.choices.map((c) => c.index), [0, 1]);
  assert.equal(chatMulti.choices[0].message.content, chatMulti.choices[1].message.content);
  await expectStatus(400, openai.chat.completions.create({ model, messages: [] }), "empty messages");
  await expectStatus(401, client(env("SERVE_URL"), "wrong-key").models.list(), "a wrong key");
  console.log(JSON.stringify({ completion: completion.choices[0].text, chat: chat.choices[0].message.content }));
}

const steps = { train, serve };
if (!steps[step]) {
  console.error(`usage: node openai_api_check.mjs train|serve`);
  process.exit(2);
}
steps[step]().catch((e) => {
  console.error(`FAIL (${step}): ${e.stack ?? e}`);
  process.exit(1);
});
