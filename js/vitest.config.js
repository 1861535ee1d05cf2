import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    environment: "happy-dom",
    include: ["test/**/*.test.js"],
    // A hang guard, not a speed limit: a busy 2-core machine can be many times slower than a laptop.
    testTimeout: 300000,
  },
});
