// Drives Debian's Chromium through the dashboard like an operator:
// node retry.mjs BASE_URL TOKEN DEAD_JOB_ID SCREENSHOT.png FIRM INVITATION_JOB_ID
// Logs in with the token, finds the dead job, clicks "relancer", waits
// until the page shows it done, opens it, and takes a screenshot. Then
// pauses the kind (answering the reason prompt), reads the label the
// queues table shows, and resumes it. Last, filters on FIRM's dead jobs
// and retries them all with the bulk button, answering its confirmation;
// then opens the sent invitation's job and reads the mail server's answer.
import { chromium } from "playwright-core";

const [base, token, jobId, screenshot, firm, invitationJob] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const failures = [];
  page.on("pageerror", (e) => failures.push(e.message));
  await page.goto(base + "/dashboard");
  await page.fill("#token", token);
  await page.click("#login-form button");
  // Filter on dead jobs of the kind, as an operator would.
  await page.waitForSelector('#queues tr[data-kind="siret_check"]');
  await page.selectOption("#f-status", "dead");
  const retry = `tr[data-job="${jobId}"] button[data-retry]`;
  await page.waitForSelector(retry, { timeout: 15000 });
  await page.click(retry);
  await page.selectOption("#f-status", "");
  await page.waitForSelector(`tr[data-job="${jobId}"][data-status="done"]`, { timeout: 20000 });
  await page.click(`tr[data-job="${jobId}"] a`);
  await page.waitForSelector("#detail:not([hidden]) h3");
  await page.screenshot({ path: screenshot, fullPage: true });
  page.once("dialog", (d) => d.accept("registre en panne"));
  await page.click('button[data-pause="siret_check"]');
  const label = await page.waitForSelector('[data-paused="siret_check"]', { timeout: 10000 });
  console.log("paused label: " + (await label.textContent()));
  await page.click('button[data-resume="siret_check"]');
  await page.waitForSelector('button[data-pause="siret_check"]', { timeout: 10000 });
  console.log("resumed");
  // Each action is in the journal, with who did it.
  for (const act of ["job.retry", "queue.pause", "queue.resume"]) {
    const row = await page.waitForSelector(`#audit tr[data-action="${act}"]`, { timeout: 10000 });
    console.log("journal: " + (await row.textContent()));
  }
  // A firm's webhook endpoint disabled for failing: said at the top.
  const hook = await page.waitForSelector('#webhooks-notice li[data-state="disabled"]', { timeout: 10000 });
  console.log("webhook notice: " + (await hook.textContent()));
  // The firms with work waiting, the most first.
  const firmRow = await page.waitForSelector('#firms tr[data-firm="cabinet-w"]', { timeout: 10000 });
  console.log("waiting: " + (await firmRow.textContent()));
  // Every dead job of one firm at once: the page says how many first.
  await page.selectOption("#f-status", "dead");
  await page.fill("#f-firm", firm);
  await page.press("#f-firm", "Enter");
  await page.waitForFunction(() => document.querySelectorAll("#jobs tbody tr").length === 3
    && document.querySelectorAll('#jobs tbody tr[data-status="dead"]').length === 3, null, { timeout: 10000 });
  page.once("dialog", (d) => { console.log("bulk asks: " + d.message()); d.accept(); });
  await page.click("#bulk-retry");
  await page.waitForFunction(() => /relancés/.test(document.querySelector("#status").textContent), null, { timeout: 10000 });
  console.log("bulk said: " + (await page.textContent("#status")));
  await page.selectOption("#f-status", "");
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr[data-status="done"]').length === 3, null, { timeout: 20000 });
  const bulkRow = await page.waitForSelector('#audit tr[data-action="jobs.bulk_retry"]', { timeout: 10000 });
  console.log("journal: " + (await bulkRow.textContent()));
  await page.fill("#f-firm", "");
  await page.selectOption("#f-kind", "invitation");
  await page.press("#f-firm", "Enter");
  await page.waitForSelector(`tr[data-job="${invitationJob}"] a`, { timeout: 10000 });
  await page.click(`tr[data-job="${invitationJob}"] a`);
  const reply = await page.waitForSelector("#detail .smtp-reply", { timeout: 10000 });
  console.log("mail server: " + (await reply.textContent()));
  if (failures.length) throw new Error("page errors: " + failures.join("; "));
  console.log("retried " + jobId);
} finally {
  await browser.close();
}
