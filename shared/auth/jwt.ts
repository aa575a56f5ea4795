export { decodeClaims, type AppTokenClaims } from './claims.js';
