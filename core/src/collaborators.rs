//! A firm's members and the collaborators of each client: several per
//! client, changeable at any time.

use serde::Serialize;

use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::write_gate::Lane;

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub id: String,
    pub firm_id: String,
    pub email: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("{0}")]
    Invalid(String),
    #[error("no client with id {0}")]
    ClientNotFound(String),
    #[error(transparent)]
    Firm(#[from] crate::firms::FirmError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl MemberError {
    pub fn is_user_error(&self) -> bool {
        match self {
            MemberError::Firm(e) => e.is_user_error(),
            e => !matches!(e, MemberError::Db(_)),
        }
    }
}

type Row = (String, String, String, String);

fn member((id, firm_id, email, name): Row) -> Member {
    Member {
        id,
        firm_id,
        email,
        name,
    }
}

/// Adds a member to the firm (an email once per firm).
pub async fn add_member(
    db: &Database,
    firm: &str,
    email: &str,
    name: &str,
) -> Result<Member, MemberError> {
    let address = crate::invitations::parse_email(email)
        .map_err(MemberError::Invalid)?
        .to_string();
    if name.trim().is_empty() {
        return Err(MemberError::Invalid("the member's name is empty".into()));
    }
    for (what, value, max) in [
        ("the member's name", name, crate::text::MAX_TEXT),
        ("the firm", firm, crate::text::MAX_ID),
    ] {
        crate::text::check(value, max).map_err(|e| MemberError::Invalid(format!("{what}: {e}")))?;
    }
    crate::firms::require(db, firm).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let _turn = db.write_turn(Lane::Interactive).await;
    let inserted = on_pool!(db, pool => sqlx::query(
        "INSERT INTO members (id, firm_id, email, email_key, name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(firm)
    .bind(&address)
    .bind(address.to_lowercase())
    .bind(name.trim())
    .bind(now_ms())
    .execute(pool)
    .await
    .map(|r| r.rows_affected()));
    match inserted {
        Ok(_) => Ok(Member {
            id,
            firm_id: firm.into(),
            email: address,
            name: name.trim().into(),
        }),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            Err(MemberError::Invalid(format!(
                "{address} is already a member of firm {firm}"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn members(db: &Database, firm: &str) -> Result<Vec<Member>, MemberError> {
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(
        "SELECT id, firm_id, email, name FROM members WHERE firm_id = $1 ORDER BY name, email",
    )
    .bind(firm)
    .fetch_all(pool)
    .await?);
    Ok(rows.into_iter().map(member).collect())
}

/// The firm's member with this email, or why there is none.
pub async fn member_by_email(
    db: &Database,
    firm: &str,
    email: &str,
) -> Result<Member, MemberError> {
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(
        "SELECT id, firm_id, email, name FROM members WHERE firm_id = $1 AND email_key = $2",
    )
    .bind(firm)
    .bind(email.trim().to_lowercase())
    .fetch_optional(pool)
    .await?);
    row.map(member).ok_or_else(|| {
        MemberError::Invalid(format!(
            "{} is not a member of firm {firm}: add it with `dossier member add`",
            email.trim()
        ))
    })
}

async fn firm_of(db: &Database, client: &str) -> Result<String, MemberError> {
    crate::clients::get(db, client)
        .await
        .map_err(|e| MemberError::Invalid(e.to_string()))?
        .map(|c| c.firm_id)
        .ok_or_else(|| MemberError::ClientNotFound(client.into()))
}

/// Makes a member of the client's firm one of its collaborators.
pub async fn add(db: &Database, client: &str, email: &str) -> Result<Member, MemberError> {
    let m = member_by_email(db, &firm_of(db, client).await?, email).await?;
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => sqlx::query(
        "INSERT INTO client_collaborators (client_id, member_id, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (client_id, member_id) DO NOTHING",
    )
    .bind(client)
    .bind(&m.id)
    .bind(now_ms())
    .execute(pool)
    .await?
    .rows_affected());
    Ok(m)
}

pub async fn remove(db: &Database, client: &str, email: &str) -> Result<(), MemberError> {
    let m = member_by_email(db, &firm_of(db, client).await?, email).await?;
    let _turn = db.write_turn(Lane::Interactive).await;
    let n = on_pool!(db, pool => sqlx::query(
        "DELETE FROM client_collaborators WHERE client_id = $1 AND member_id = $2",
    )
    .bind(client)
    .bind(&m.id)
    .execute(pool)
    .await?
    .rows_affected());
    if n == 0 {
        return Err(MemberError::Invalid(format!(
            "{} is not a collaborator of client {client}",
            m.email
        )));
    }
    Ok(())
}

pub async fn of_client(db: &Database, client: &str) -> Result<Vec<Member>, MemberError> {
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(
        "SELECT m.id, m.firm_id, m.email, m.name FROM client_collaborators c
         JOIN members m ON m.id = c.member_id WHERE c.client_id = $1 ORDER BY m.name",
    )
    .bind(client)
    .fetch_all(pool)
    .await?);
    Ok(rows.into_iter().map(member).collect())
}
