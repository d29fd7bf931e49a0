// A real OpenID provider for Muster's company sign-in tests: panva's certified
// oidc-provider, configured from a JSON file the test fixture writes (tests/web/oidc.py):
//
//   node provider.mjs <config.json>
//   { "issuer": "http://127.0.0.1:<port>", "port": <port>, "cookie_key": "...",
//     "jwks": {"keys": [<private JWK>]},          // the tests keep the key: they can sign
//     "clients": [{"client_id", "client_secret", "redirect_uris"}],
//     "accounts": {"<login>": {"email", "email_verified", "name"}} }
//
// Prints `ready <issuer>` once it listens. The login page is oidc-provider's own development
// login (devInteractions: any password; the login names the account, unknown logins fail).
// Clients are `native` so that their loopback redirect URI matches on any port (RFC 8252,
// 7.3): each test's Muster listens on a free port. The first-party consent is granted
// without a page (loadExistingGrant, and no native-client confirmation), as a company's
// provider does for its own apps.
import { readFileSync } from 'node:fs';

import Provider, { interactionPolicy } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// The default policy asks a native client's user to confirm every time; these clients are
// native only for the loopback port rule above, so their consent is the first-party one.
const policy = interactionPolicy.base();
policy.get('consent').checks.remove('native_client_prompt');

const provider = new Provider(config.issuer, {
  clients: config.clients.map((client) => ({
    ...client,
    application_type: 'native',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  jwks: config.jwks,
  cookies: { keys: [config.cookie_key] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  features: { devInteractions: { enabled: true } },
  interactions: { policy },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    const account = config.accounts[id];
    if (account === undefined) {
      return undefined;
    }
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      return ctx.oidc.provider.Grant.find(grantId);
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    grant.addOIDCClaims(['email', 'email_verified', 'name']);
    await grant.save();
    return grant;
  },
});

const server = provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${config.issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
