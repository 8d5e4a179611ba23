// Dependency rules for nixfarm: `npm run deps` fails on any violation (it runs from `npm test`).
// Workspace imports (@nixfarm/<name>) resolve to packages/<name>/src/index.ts through tsconfig.deps.json's paths,
// so the rules see the sources (not dist/) and a new package (e.g. @nixfarm/build) needs no edit here.

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment:
        'A cycle between files (type-only imports included: they still tie the two files to each other). Break it with a narrow port or by moving the shared piece down.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-circular-folders',
      severity: 'error',
      scope: 'folder',
      comment: 'Two directories of a package (e.g. coordinator runs/ and events/) import each other: one of them must own the concept, the other use it.',
      from: { path: '^packages/[^/]+/src/[^/]+' },
      to: { path: '^packages/[^/]+/src/[^/]+', circular: true },
    },
    {
      name: 'coordinator-not-to-worker',
      severity: 'error',
      comment: 'The coordinator must not depend on the worker package: code both need belongs in @nixfarm/shared or @nixfarm/build.',
      from: { path: '^packages/coordinator/' },
      to: { path: '^packages/worker/' },
    },
    {
      name: 'worker-not-to-coordinator',
      severity: 'error',
      comment: 'The worker runs on other machines and talks to the coordinator over Redis/SSH/HTTP only.',
      from: { path: '^packages/worker/' },
      to: { path: '^packages/coordinator/' },
    },
    {
      name: 'shared-imports-no-package',
      severity: 'error',
      comment: '@nixfarm/shared is the bottom layer: it imports no other @nixfarm package.',
      from: { path: '^packages/shared/' },
      to: { path: '^packages/(?!shared/)[^/]+/' },
    },
    {
      name: 'build-only-on-shared',
      severity: 'error',
      comment: '@nixfarm/build (build execution, used by coordinator and worker) sits on @nixfarm/shared only.',
      from: { path: '^packages/build/' },
      to: { path: '^packages/(?!build/|shared/)[^/]+/' },
    },
    {
      name: 'cli-is-the-top',
      severity: 'error',
      comment: 'Nothing imports the CLI package: it is the composition of the others.',
      from: { path: '^packages/(?!cli/)[^/]+/' },
      to: { path: '^packages/cli/' },
    },
    {
      name: 'graph-not-to-evaluation',
      severity: 'error',
      comment:
        'The derivation graph (state machine over Redis) must not know the evaluator or the planner: evaluation feeds the graph, not the other way round.',
      from: { path: '^packages/coordinator/src/graph/' },
      to: { path: '^packages/coordinator/src/evaluation/' },
    },
    {
      name: 'not-to-test',
      severity: 'error',
      comment: 'Production code (packages/, scripts/) never imports test code.',
      from: { pathNot: '^test/' },
      to: { path: '^test/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment:
        "An import that resolves to nothing on disk (a typo, or a dependency that is not installed). The dashboard's uPlot is the one exception: the coordinator serves it beside charts.js from the uplot package (dashboard-routes.ts).",
      from: {},
      to: { couldNotResolve: true, pathNot: '^\\./uPlot\\.esm\\.js$' },
    },
    {
      name: 'packages-not-to-dev-dependency',
      severity: 'error',
      comment: 'A package imports a devDependency: an install without dev dependencies (a production image) would break.',
      from: { path: '^packages/' },
      to: { dependencyTypes: ['npm-dev'] },
    },
    {
      name: 'no-undeclared-dependency',
      severity: 'error',
      comment: 'An npm package imported but not declared in the root package.json (where the workspaces install them).',
      from: {},
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Build output is left out (packages/cli/bin/nixfarm.js imports ../dist/main.js by design: it is the built CLI's launcher).
    exclude: { path: '(^|/)(dist|test-artifacts)/|^bench/results/' },
    // Type-only imports are dependencies too: "the graph imports the planner's type" is a wrong-way import.
    tsPreCompilationDeps: true,
    // The packages declare their dependencies in their own package.json or, hoisted, in the root one.
    combinedDependencies: true,
    tsConfig: { fileName: 'tsconfig.deps.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};
