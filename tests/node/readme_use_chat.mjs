// Runs a React component that uses the AI SDK's useChat (README.md's, as written) in a
// real DOM (jsdom): esbuild turns its JSX into ESM, react-dom renders it, the script
// types a question and clicks its button, and prints the page's paragraphs and the
// input's value once the answer has streamed (or what they are after 20 s) as JSON.
//   node readme_use_chat.mjs COMPONENT.jsx
import { unlink } from "node:fs/promises";
import { resolve } from "node:path";
import { build } from "esbuild";
import { JSDOM } from "jsdom";

const [component] = process.argv.slice(2);
const question = "where is the cat?";
const dom = new JSDOM("<!doctype html><div id=root></div>", { url: "http://localhost/" });
for (const name of ["window", "document", "navigator", "HTMLElement", "Event", "FormData"]) {
  Object.defineProperty(globalThis, name, { value: dom.window[name], configurable: true });
}

// "ai" is AI SDK 6 here (ai-v6), the one @ai-sdk/react 3 is built on; React stays one
// copy, shared with react-dom below.
const bundle = new URL("./readme_use_chat.bundle.mjs", import.meta.url);
await build({
  entryPoints: [resolve(component)],
  absWorkingDir: new URL(".", import.meta.url).pathname, // where an alias resolves
  outfile: bundle.pathname,
  bundle: true,
  format: "esm",
  platform: "browser",
  jsx: "automatic",
  alias: { ai: "ai-v6" },
  external: ["react", "react-dom", "react/jsx-runtime"],
  logLevel: "error",
});
let Chat;
try {
  ({ default: Chat } = await import(bundle.href));
} finally {
  await unlink(bundle);
}
const React = await import("react");
const { createRoot } = await import("react-dom/client");
const { flushSync } = await import("react-dom");

const root = createRoot(document.getElementById("root"));
flushSync(() => root.render(React.createElement(Chat)));

// Typing as a user does (React reads a value through the input's own setter), then a
// click on the button, which submits the form.
const input = document.querySelector("input");
const setValue = Object.getOwnPropertyDescriptor(dom.window.HTMLInputElement.prototype, "value").set;
setValue.call(input, question);
input.dispatchEvent(new dom.window.Event("input", { bubbles: true }));
document.querySelector("button").click();

// The form's action resolves, and React resets the form, once the answer has streamed.
const text = () => [...document.querySelectorAll("p")].map((p) => p.textContent);
const answered = () => input.value === "" && text().some((t) => t.startsWith("assistant: "));
const deadline = Date.now() + 20000;
while (Date.now() < deadline && !answered()) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
console.log(JSON.stringify({ paragraphs: text(), input: input.value }));
root.unmount();
