"""A corpus of planted secrets, built from the documented formats of the rule sets
(detect-secrets' plugins, gitleaks' rules, the providers' own token formats) with random
bodies generated here: none is a real credential.

``planted(seed)`` -> list of (kind, text to plant, needle that must not survive).
"""

from __future__ import annotations

import base64
import json
import random
import string

UP = string.ascii_uppercase
LO = string.ascii_lowercase
DIG = string.digits
ALNUM = UP + LO + DIG
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    s = "".join(rng.choice(alphabet) for _ in range(n))
    if alphabet in (ALNUM, URLSAFE) and not any(c.isdigit() for c in s):
        s = s[:-1] + rng.choice(DIG)  # keep every body "random-looking" (a digit in it)
    return s


def _b64url(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def planted(seed: int = 15) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    r = lambda a, n: _r(rng, a, n)  # noqa: E731
    out: list[tuple[str, str, str]] = []

    def add(kind: str, text: str, needle: str) -> None:
        out.append((kind, text, needle))

    # --- cloud providers
    for ctx in ("plain {}", "export AWS_ACCESS_KEY_ID={}"):
        k = rng.choice(["AKIA", "ASIA"]) + r(UP + "234567", 16)
        add("aws_access_key_id", ctx.format(k), k)
    v = r(B64, 40)
    add("aws_secret_key", f"aws_secret_access_key = {v}", v)
    v = r(B64, 40)
    add("aws_secret_key", f'{{"SecretAccessKey": "{v}"}}', v)
    v = "AIza" + r(URLSAFE, 35)
    add("google_api_key", f"GOOGLE_MAPS={v}", v)
    add("google_api_key", f"https://maps.googleapis.com/api?key={v}&q=1", v)
    v = r(B64, 86) + "=="
    add("azure_storage_key", "DefaultEndpointsProtocol=https;AccountName=acmestore;"
        f"AccountKey={v};EndpointSuffix=core.windows.net", v[:40])
    v = r(B64, 86) + "=="
    add("azure_storage_key", f'conn = "DefaultEndpointsProtocol=https;AccountName=x;AccountKey={v}"', v[:40])
    # --- model providers
    v = "sk-ant-api03-" + r(URLSAFE, 93) + "AA"
    add("anthropic_key", f"ANTHROPIC_API_KEY={v}", v[10:40])
    add("anthropic_key", f"curl -H 'x-api-key: {v}' https://api.anthropic.com", v[10:40])
    v = "sk-proj-" + r(URLSAFE, 74) + "T3BlbkFJ" + r(URLSAFE, 74)
    add("openai_key", f"client = OpenAI(api_key='{v}')", v[8:40])
    v = "sk-" + r(ALNUM, 20) + "T3BlbkFJ" + r(ALNUM, 20)
    add("openai_key", f"old key {v} here", v[3:30])
    v = "sk-or-v1-" + r(HEX, 64)
    add("openrouter_key", f"OPENROUTER_API_KEY={v}", v[9:40])
    v = "sk-or-v1-" + r(HEX, 64)
    add("openrouter_key", f'headers = {{"Authorization": f"Bearer {{key}}"}}  # key={v}', v[9:40])
    v = "hf_" + r(ALNUM, 34)
    add("hf_token", f"huggingface-cli login --token {v}", v)
    add("hf_token", f"HF_TOKEN: {v}", v)
    # --- code hosts / registries
    v = "ghp_" + r(ALNUM, 36)
    add("github_token", f"git clone https://{v}@github.com/acme/app.git", v)
    v = "github_pat_" + r(ALNUM, 22) + "_" + r(ALNUM, 59)
    add("github_token", f"GITHUB_TOKEN={v}", v)
    v = "gho_" + r(ALNUM, 36)
    add("github_token", f"oauth {v}", v)
    v = "glpat-" + r(URLSAFE, 20)
    add("gitlab_token", f"PRIVATE-TOKEN: {v}", v)
    v = "glpat-" + r(URLSAFE, 20)
    add("gitlab_token", f"git remote add origin https://oauth2:{v}@gitlab.com/acme/app.git", v)
    v = "npm_" + r(ALNUM, 36)
    add("npm_token", f"//registry.npmjs.org/:_authToken={v}", v)
    add("npm_token", f"NPM_TOKEN {v}", v)
    v = "pypi-AgEIcHlwaS5vcmc" + r(URLSAFE, 80)
    add("pypi_token", f"twine upload -u __token__ -p {v} dist/*", v[20:60])
    v = "pypi-AgENdGVzdC5weXBpLm9yZw" + r(URLSAFE, 80)
    add("pypi_token", f"[testpypi]\n  password = {v}", v[30:70])
    # --- payments / messaging / mail
    v = "sk_live_" + r(ALNUM, 99)
    add("stripe_key", f"STRIPE_SECRET_KEY={v}", v[8:60])
    v = "rk_live_" + r(ALNUM, 24)
    add("stripe_key", f"stripe.api_key = \"{v}\"", v)
    v = "SG." + r(URLSAFE, 22) + "." + r(URLSAFE, 43)
    add("sendgrid_key", f"SENDGRID_API_KEY={v}", v)
    add("sendgrid_key", f"sg = SendGridAPIClient('{v}')", v)
    v = "AC" + r(HEX, 32)
    add("twilio_key", f"account_sid = {v}", v)
    v = "SK" + r(HEX, 32)
    add("twilio_key", f"twilio api key {v}", v)
    v = str(rng.randint(10**8, 10**9 - 1)) + ":AA" + r(URLSAFE, 33)
    add("telegram_bot_token", f"https://api.telegram.org/bot{v}/getMe", v)
    add("telegram_bot_token", f"TELEGRAM_BOT_TOKEN={v}", v)
    v = rng.choice("MNO") + r(URLSAFE, 23) + "." + r(URLSAFE, 6) + "." + r(URLSAFE, 27)
    add("discord_bot_token", f"client.run('{v}')", v)
    v = rng.choice("MNO") + r(URLSAFE, 24) + "." + r(URLSAFE, 6) + "." + r(URLSAFE, 27)
    add("discord_bot_token", f"DISCORD_TOKEN = {v}", v)
    v = "key-" + r(HEX, 32)
    add("mailgun_key", f"requests.post(url, auth=('api', '{v}'))", v)
    add("mailgun_key", f"MAILGUN_API_KEY={v}", v)
    v = r(HEX, 32) + "-us" + str(rng.randint(1, 20))
    add("mailchimp_key", f"mailchimp.set_config({{'api_key': '{v}'}})", v)
    v = r(HEX, 32) + "-us" + str(rng.randint(1, 20))
    add("mailchimp_key", f"client = MailchimpMarketing.Client(); key {v}", v)
    v = "sq0csp-" + r(URLSAFE, 43)
    add("square_token", f"SQUARE_SECRET {v}", v)
    v = "sq0csp-" + r(URLSAFE, 43)
    add("square_token", f"square.Client(access_token='{v}')", v)
    v = "xoxb-" + "".join(rng.choice(DIG) for _ in range(12)) + "-" + "".join(
        rng.choice(DIG) for _ in range(13)) + "-" + r(ALNUM, 24)
    add("slack_token", f"SLACK_BOT_TOKEN={v}", v)
    v = f"https://hooks.slack.com/services/T{r(UP + DIG, 8)}/B{r(UP + DIG, 10)}/{r(ALNUM, 24)}"
    add("slack_token", f"webhook: {v}", v[33:])
    # --- tokens
    v = ("eyJ" + _b64url({"alg": "HS256", "typ": "JWT"})[3:] + "." + _b64url(
        {"sub": r(DIG, 10), "name": r(LO, 8), "iat": 1516239022}) + "." + r(URLSAFE, 43))
    add("jwt", f"token={v}", v.split(".")[2])
    add("jwt", f"cookie session={v}; Path=/", v.split(".")[1])
    v = r(URLSAFE, 40)
    add("bearer_token", f'curl -H "Authorization: Bearer {v}" https://api.acme.io', v)
    # --- URLs with passwords
    pw = r(ALNUM, 16)
    add("url_password", f"DATABASE_URL=postgres://app:{pw}@db.internal:5432/app", pw)
    pw = r(ALNUM, 14)
    add("url_password", f"psql mysql://root:{pw}@10.1.2.3/prod", pw)
    pw = r(ALNUM, 12)
    add("url_password", f"pip install --index-url https://deploy:{pw}@pypi.acme.io/simple pkg", pw)
    pw = r(ALNUM, 18)
    add("url_password", f"redis://default:{pw}@cache:6379/0", pw)
    # --- config lines / flags / env
    pw = r(ALNUM, 14)
    add("config_secret", f'db_password: "{pw}"', pw)
    pw = r(ALNUM, 20)
    add("config_secret", f"  api_token: {pw}", pw)
    pw = r(ALNUM, 12)
    add("password_flag", f"mysql --user=root --password={pw} prod", pw)
    pw = r(ALNUM, 16)
    add("password_flag", f"./deploy.sh --api-key {pw} --region eu", pw)
    v = r(HEX, 32)
    add("env_secret", f"DD_API_KEY={v} DD_SITE=datadoghq.eu python app.py", v)
    v = r(ALNUM, 24)
    add("env_secret", f"SECRET_KEY={v}", v)
    v = r(ALNUM, 18)
    add("env_secret", f"export DB_PASSWORD='{v}'", v)
    v = r(ALNUM, 24)
    add("secret_field", f'{{"client_secret": "{v}", "client_id": "abc"}}', v)
    v = r(ALNUM, 20)
    add("secret_field", f"{{'password': '{v}'}}", v)
    # --- private keys
    body = "\n".join(r(B64, 64) for _ in range(6))
    add("private_key", f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----", body[:40])
    body = "\n".join(r(B64, 70) for _ in range(4))
    add("private_key", f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----", body[:40])
    body = "\n".join(r(B64, 64) for _ in range(3))
    add("private_key", f"-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----", body[:40])
    # --- wrapped
    inner = "sk-ant-api03-" + r(URLSAFE, 93) + "AA"
    v = base64.b64encode(f"ANTHROPIC_API_KEY={inner}\n".encode()).decode()
    add("base64_secret", f"echo {v} | base64 -d > .env", v[20:60])
    inner = "ghp_" + r(ALNUM, 36)
    v = base64.b64encode(f"token={inner}".encode()).decode()
    add("base64_secret", f"data:\n  token: {v}", v[8:40])
    return out
