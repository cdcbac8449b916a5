// Pauses and resumes a Troupe agent through AG-UI's own client (@ag-ui/client's
// HttpAgent): the first run ends with RUN_FINISHED's interrupt outcome (the client's
// pendingInterrupts), the person's answers go back as the next run's `resume`
// (buildResumeArray), and that run finishes. Prints what the client saw, as JSON.
import { HttpAgent, buildResumeArray } from "@ag-ui/client";

const [url, question, answer] = process.argv.slice(2);
const agent = new HttpAgent({ url });
agent.messages = [{ id: "user-1", role: "user", content: question }];

async function run(parameters) {
  const types = [];
  let outcome;
  await agent.runAgent(
    { runId: crypto.randomUUID(), ...parameters },
    {
      onEvent: ({ event }) => { types.push(event.type); },
      onRunFinishedEvent: (params) => { outcome = params.outcome; },
    },
  );
  return { types, outcome, pending: agent.pendingInterrupts };
}

const first = await run({});
const responses = Object.fromEntries(
  first.pending.map((interrupt) => [
    interrupt.id,
    answer === "cancel"
      ? { status: "cancelled" }
      : { status: "resolved", payload: { approved: answer === "approve", reason: "said so" } },
  ]),
);
const second = await run({ resume: buildResumeArray(first.pending, responses) });
console.log(JSON.stringify({ first, second, messages: agent.messages }));
