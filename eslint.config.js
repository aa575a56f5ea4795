// ESLint (typescript-eslint, type-aware) for Postroom. `npm run lint` runs it; `npm test` runs lint and format checks first.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import jsdoc from 'eslint-plugin-jsdoc';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.sandbox/**', 'scripts/**', 'bin/**', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // Errors are coded PostroomErrors or TypeErrors; catch clauses narrow what they take.
      '@typescript-eslint/only-throw-error': 'error',
      // node:test's describe/it/test return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'before', 'after', 'beforeEach', 'afterEach'] }] },
      ],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      eqeqeq: ['error', 'smart'],
      // Postroom's objects are closures over their state, not classes: handing a method on does not lose `this`.
      '@typescript-eslint/unbound-method': 'off',
      // Header and protocol code matches control characters on purpose (CR/LF injection, SASL separators).
      'no-control-regex': 'off',
    },
  },
  {
    // Production code: functions stay short (the brief: about 50 lines); every exported interface and its fields carry TSDoc.
    files: ['shared/**/*.ts', 'functions/**/*.ts'],
    plugins: { jsdoc },
    rules: {
      'max-lines-per-function': ['error', { max: 50, skipBlankLines: true, skipComments: true, IIFEs: true }],
      'jsdoc/require-jsdoc': [
        'error',
        {
          publicOnly: true,
          require: { FunctionDeclaration: false },
          contexts: ['TSInterfaceDeclaration', 'TSInterfaceDeclaration TSPropertySignature', 'TSInterfaceDeclaration TSMethodSignature', 'TSTypeAliasDeclaration'],
        },
      ],
    },
  },
  {
    // Tests, the sandbox and the benchmarks drive real servers and read loosely typed replies.
    files: ['test/**/*.ts', 'sandbox/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      // Stand-ins implement async interfaces with synchronous bodies.
      '@typescript-eslint/require-await': 'off',
    },
  },
);
