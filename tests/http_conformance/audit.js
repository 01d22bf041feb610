// Runs graphql-http's GraphQL over HTTP conformance audits (serverAudits)
// against a Mosaic instance and prints a JSON summary on stdout:
//   node audit.js <graphql URL> <API token>
// Every request carries the token, as Mosaic needs authentication.
"use strict";
const { auditServer } = require("graphql-http");

// The start of a failed audit's response body, when the audit left it unread.
async function bodyStart(response) {
  try {
    return (await response.text()).slice(0, 300);
  } catch {
    return null;
  }
}

async function main() {
  const [url, token] = process.argv.slice(2);
  if (!url || !token) {
    console.error("usage: node audit.js <graphql URL> <API token>");
    process.exit(2);
  }
  const fetchFn = (input, init = {}) => {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${token}`);
    return fetch(input, { ...init, headers });
  };
  const results = await auditServer({ url, fetchFn });
  const summary = { total: results.length, levels: {}, failed: [] };
  for (const result of results) {
    const level = result.name.split(" ")[0];
    const counts = (summary.levels[level] ??= { ok: 0, warn: 0, error: 0, notice: 0 });
    counts[result.status] += 1;
    if (result.status !== "ok") {
      summary.failed.push({
        id: result.id,
        name: result.name,
        status: result.status,
        reason: result.reason,
        httpStatus: result.response.status,
        body: await bodyStart(result.response),
      });
    }
  }
  console.log(JSON.stringify(summary));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
