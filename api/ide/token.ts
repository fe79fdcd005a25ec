import { Schema } from "effect"
import { errors as joseErrors, jwtVerify, SignJWT } from "jose"
import { randomUUID } from "node:crypto"
import { IDE_TOKEN_AUDIENCE, IDE_TOKEN_TTL_SECONDS, IdeTokenClaims, TOKEN_ISSUER } from "../../schemas/tokens.ts"
import { ApiError } from "../errors.ts"

const decodeClaims = Schema.decodeUnknownExit(IdeTokenClaims)

export const ideTokenKey = (secret: string): Uint8Array => new TextEncoder().encode(secret)

/** Mints the 300 s IDE token (claims in api/ide/README.md). `nowMs` comes from the app's clock. */
export const signIdeToken = async (
  key: Uint8Array,
  input: { userId: string; vmid: number; nowMs: number; ttlSeconds?: number }
): Promise<{ token: string; claims: IdeTokenClaims }> => {
  const iat = Math.floor(input.nowMs / 1000)
  const claims: IdeTokenClaims = {
    sub: input.userId,
    vmid: input.vmid,
    type: "dev-ide",
    jti: randomUUID(),
    iat,
    exp: iat + (input.ttlSeconds ?? IDE_TOKEN_TTL_SECONDS),
    iss: TOKEN_ISSUER,
    aud: IDE_TOKEN_AUDIENCE
  }
  const token = await new SignJWT({ vmid: claims.vmid, type: claims.type })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(claims.sub)
    .setJti(claims.jti)
    .setIssuedAt(claims.iat)
    .setExpirationTime(claims.exp)
    .setIssuer(claims.iss)
    .setAudience(claims.aud)
    .sign(key)
  return { token, claims }
}

/** Verifies signature, algorithm, issuer, audience, expiry and the claim shapes; throws 401 ApiErrors. */
export const verifyIdeToken = async (key: Uint8Array, token: string, nowMs: number): Promise<IdeTokenClaims> => {
  let payload: unknown
  try {
    const verified = await jwtVerify(token, key, {
      algorithms: ["HS256"],
      issuer: TOKEN_ISSUER,
      audience: IDE_TOKEN_AUDIENCE,
      currentDate: new Date(nowMs),
      requiredClaims: ["sub", "jti", "iat", "exp"]
    })
    payload = verified.payload
  } catch (cause) {
    if (cause instanceof joseErrors.JWTExpired) throw new ApiError(401, "ide_token_expired", "the IDE token has expired; open the IDE again from the panel", { cause })
    throw new ApiError(401, "ide_token_invalid", "the IDE token is not valid", { cause })
  }
  const exit = decodeClaims(payload)
  if (exit._tag === "Failure") throw new ApiError(401, "ide_token_invalid", "the IDE token has unexpected claims")
  return exit.value
}
